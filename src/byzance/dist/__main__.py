"""``python -m byzance.dist --config run.toml [--key value ...] [--resume]``, under torchrun."""

from byzance.dist.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
