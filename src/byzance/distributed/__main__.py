"""``python -m byzance.distributed --config run.toml [--key value ...] [--resume]``, under torchrun."""

from byzance.distributed.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
