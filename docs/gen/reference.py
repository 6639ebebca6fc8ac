"""Markdown pages for every registered rule and attack, written from the registries.

Each page holds the registry's metadata (summary, requirement on n and f,
paper, cost; for a rule also how it treats missing coordinates, its state
across steps, its randomness and its speed floor) and the implementation's
docstring (definition, parameters, returns, example). A rule carries its cost
(``rule.cost``); an attack's cost is in ATTACK_COSTS below. A rule or attack
without a cost stops the docs build, so that no page goes out without it.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from collections.abc import Callable, Iterable

from byzance import aggregators, attacks

# Every registered rule's cost, from the rule itself (``rule.cost``, set where it is
# registered): a view for the check below, never a table to edit.
RULE_COSTS: dict[str, str] = {r.name: r.cost for r in aggregators.rules() if r.cost}

# Time for h honest vectors of dimension d. The attacks do not carry their cost yet.
ATTACK_COSTS: dict[str, str] = {
    "large_norm": "O(fd): one vector.",
    "sign_flip": "O(hd): the honest mean.",
    "ipm": "O(hd): the honest mean.",
    "gaussian": "O(fd): f random draws.",
    "nan": "O(fd).",
    "inf": "O(fd).",
    "zero": "O(fd).",
    "constant": "O(fd).",
    "alie": "O(hd): the honest mean and standard deviation per coordinate.",
    "mimic": "O(h^2 d) for the centered Gram matrix, then one (h x h) eigendecomposition.",
    "hidden_vulnerability": (
        "O(hd) with E given; otherwise a line search on E, each step one "
        "application of the rule under attack to (h + f, d) vectors."
    ),
    "adaptive": (
        "A line search on the base attack's strength (geometric grid, then golden "
        "section): each step one base attack and one application of the rule under attack."
    ),
    "label_flip": "O(batch): a lookup per label.",
}


def _missing(costs: dict[str, str], names: Iterable[str], what: str) -> None:
    names = list(names)
    lacking = sorted(set(names) - set(costs))
    stale = sorted(set(costs) - set(names))
    if lacking or stale:
        raise ValueError(
            f"docs/gen/reference.py: every registered {what} needs a cost entry and every "
            f"entry a registered {what}; add {lacking or 'none'}, remove {stale or 'none'}."
        )


def _inline(text: str) -> str:
    """reStructuredText leftovers of the docstrings into Markdown."""
    text = re.sub(r":(?:func|class|meth|mod):`~?([^`]+)`", r"`\1`", text)
    return text.replace("``", "`")


_SECTION = re.compile(r"^(Args|Returns|Example|Examples|Raises):\s*$")


def _split_google(doc: str) -> dict[str, str]:
    """A Google-style docstring's parts: "text" (before any section), then each section's body."""
    parts: dict[str, list[str]] = {"text": []}
    current = "text"
    for line in doc.splitlines():
        match = _SECTION.match(line)
        if match:
            current = {"Examples": "Example"}.get(match.group(1), match.group(1))
            parts[current] = []
        else:
            parts[current].append(line)
    return {k: textwrap.dedent("\n".join(v)).strip() for k, v in parts.items()}


def _args_table(body: str, impl: Callable) -> str:
    """The Args section as a table: name, default (from the signature), meaning."""
    params = inspect.signature(impl).parameters
    entries: list[list[str]] = []
    for line in body.splitlines():
        if line and not line[0].isspace() and ":" in line:
            name, _, text = line.partition(":")
            entries.append([name.strip(), text.strip()])
        elif entries:
            entries[-1][1] += " " + line.strip()
    rows = ["| parameter | default | meaning |", "| --- | --- | --- |"]
    for name, meaning in entries:
        sig = params.get(name)
        default = (
            "required"
            if sig is None or sig.default is inspect.Parameter.empty
            else f"`{sig.default!r}`"
        )
        rows.append(f"| `{name}` | {default} | {_inline(meaning)} |")
    return "\n".join(rows) + "\n"


def _docstring_sections(impl: Callable) -> dict[str, str]:
    """Definition, parameters, returns and example of ``impl``'s Google-style docstring, as Markdown."""
    raw = _split_google(inspect.getdoc(impl) or "")
    return {
        "definition": _inline(raw["text"]) + "\n",
        "parameters": _args_table(raw["Args"], impl) if raw.get("Args") else "",
        "returns": _inline(" ".join(raw.get("Returns", "").split())) + "\n",
        "example": f"```pycon\n{raw['Example']}\n```\n" if raw.get("Example") else "",
    }


def _sections(parts: dict[str, str], order: Iterable[tuple[str, str]]) -> str:
    return "".join(f"## {title}\n\n{parts[key]}\n" for key, title in order if parts[key].strip())


def _largest_f(rule: aggregators.Rule, ns: Iterable[int] = (10, 20, 50)) -> str:
    return ", ".join(f"n = {n}: f <= {rule.requirement.max_f(n)}" for n in ns)


_FLOORS = {"pass": "one pass, `x.sum(0)`", "gram": "one Gram product, `x @ x.T`"}
_MISSING = {
    "coordinate_wise": (
        "coordinate-wise: each coordinate aggregates the values that arrived "
        "(`aggregate_with_missing`)"
    ),
    "whole_vectors": (
        "whole vectors: each missing coordinate is first filled with the median of the "
        "values that arrived there (`aggregate_with_missing`)"
    ),
}


def _speed(rule: aggregators.Rule) -> str:
    """The rule's speed floor, and its target where it has one."""
    floor = _FLOORS[rule.speed_floor]
    if rule.speed_target is None:
        return f"{floor} (`byzance bench rules`)"
    return f"{floor}; target: within {rule.speed_target:g}x of it (`byzance bench rules`)"


def rule_page(rule: aggregators.Rule) -> str:
    """The page of one registered rule."""
    kind = (
        "aggregation rule, (n, d) -> (d,)"
        if rule.kind == "aggregator"
        else "pre-aggregator, (n, d) -> (m, d); compose it in front of a rule"
    )
    facts = [("kind", kind), ("requirement", f"`{rule.requirement}`")]
    if rule.requirement.a:
        facts += [
            ("smallest n", ", ".join(f"f = {f}: {rule.min_n(f)}" for f in (1, 2, 4))),
            ("largest f", _largest_f(rule)),
        ]
    elif rule.kind == "preaggregator":
        facts.append(("tolerates", "any f: the rule that follows sets the requirement"))
    facts += [
        ("paper", rule.paper),
        ("cost", RULE_COSTS[rule.name]),
        ("speed floor", _speed(rule)),
        ("missing coordinates", _MISSING[rule.missing]),
    ]
    if rule.carries_center:
        facts.append(("state", "carried across steps: pass the previous output back as `center`"))
    if rule.takes_generator:
        facts.append(("randomness", "draws from `generator` (or a fresh one seeded with `seed`)"))
    if not rule.robust:
        facts.insert(1, ("robust", "no: one input moves it anywhere; the baseline"))
    if rule.selector is not None:
        facts.append(("selection", f"`{rule.name}.selected(grads, f)` gives the inputs it uses"))
    if rule.kind == "aggregator":
        call = f'out = agg.get("{rule.name}")(grads, f=2)\nassert out.shape == (100,)'
        toml = f'aggregator = "{rule.name}"'
    else:
        call = (
            f'rows = agg.get("{rule.name}")(grads, f=2)  # (m, d)\n'
            f'out = agg.get("{rule.name}>median")(grads, f=2)  # then any rule\n'
            "assert out.shape == (100,)"
        )
        toml = f'preaggregators = ["{rule.name}"]\naggregator = "median"'
    parts = _docstring_sections(rule.impl)
    parts["use"] = (
        "```python\nimport torch\n\nimport byzance.aggregators as agg\n\n"
        "grads = torch.randn(15, 100)  # (n, d)\n"
        f"{call}\n```\n\nIn a run config (`byzance train --config run.toml`):\n\n"
        f"```toml\n{toml}\n```\n"
    )
    return (
        f"# {rule.name}\n\n{_sentence(rule.summary)}\n\n"
        + _table(facts)
        + _sections(
            parts,
            [
                ("definition", "Definition"),
                ("parameters", "Parameters"),
                ("returns", "Returns"),
                ("example", "Example"),
                ("use", "Use"),
            ],
        )
    )


def attack_page(attack: attacks.GradientAttack | attacks.DataAttack) -> str:
    """The page of one registered attack."""
    if attack.kind == "data":
        kind = "data attack: a Byzantine worker trains on corrupted labels"
        needs = "labels and the number of classes; any n and f"
        use = (
            "labels = torch.randint(0, 10, (32,))\n"
            f'flipped = attacks.get("{attack.name}")(labels, num_classes=10)\n'
            "assert flipped.shape == labels.shape"
        )
    else:
        kind = (
            "gradient attack: sees the honest vectors (h, d), returns the f Byzantine ones (f, d)"
        )
        needs = (
            "the rule under attack (`rule=`), or a fixed strength"
            if attack.needs_rule
            else "the honest vectors only; any f >= 1"
        )
        rule_arg = ', rule="krum"' if attack.needs_rule else ""
        use = (
            "honest = torch.randn(16, 100)  # (h, d)\n"
            f'byzantine = attacks.get("{attack.name}")(honest, f=4{rule_arg})\n'
            "assert byzantine.shape == (4, 100)"
        )
    facts = [("kind", kind), ("requirement", needs)]
    strength = getattr(attack, "strength", None)
    if strength:
        facts.append(("strength", f"`{strength}` (the parameter searched by `adaptive`)"))
    facts += [("paper", attack.paper), ("cost", ATTACK_COSTS[attack.name])]
    parts = _docstring_sections(attack.impl)
    parts["use"] = (
        f"```python\nimport torch\n\nimport byzance.attacks as attacks\n\n{use}\n```\n\n"
        f'In a run config:\n\n```toml\nattack = "{attack.name}"\n```\n'
    )
    return (
        f"# {attack.name}\n\n{_sentence(attack.summary)}\n\n"
        + _table(facts)
        + _sections(
            parts,
            [
                ("definition", "Definition"),
                ("parameters", "Parameters"),
                ("returns", "Returns"),
                ("example", "Example"),
                ("use", "Use"),
            ],
        )
    )


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def _table(facts: list[tuple[str, str]]) -> str:
    rows = "\n".join(f"| {k} | {v} |" for k, v in facts)
    return f"| property | value |\n| --- | --- |\n{rows}\n\n"


def rules_index() -> str:
    """The table of every rule, linking to its page."""
    _missing(RULE_COSTS, aggregators.names(), "rule")
    out = [
        "# Aggregation rules\n",
        "Every rule is called as `rule(grads, f, **params)` on `grads` of shape (n, d). "
        "Aggregation rules return shape (d,); pre-aggregators return (m, d) and compose "
        'in front of any rule (`agg.get("nnm>trimmed_mean")`). These pages are generated '
        "from the registry (`byzance.aggregators`) when the site is built; `byzance rules` "
        "prints the same list. Each page gives the rule's cost; measured times are on "
        "the [results](../results.md) page (`byzance bench rules`).\n",
    ]
    for kind, title in (("aggregator", "Rules"), ("preaggregator", "Pre-aggregators")):
        out += [
            f"## {title}\n",
            "| rule | requirement | summary | paper |",
            "| --- | --- | --- | --- |",
        ]
        out += [
            f"| [{r.name}]({r.name}.md) | `{r.requirement}` | {r.summary} | {r.paper} |"
            for r in aggregators.rules(kind)
        ]
        out.append("")
    return "\n".join(out) + "\n"


def attacks_index() -> str:
    """The table of every attack, linking to its page."""
    _missing(ATTACK_COSTS, attacks.names(), "attack")
    out = [
        "# Attacks\n",
        "What the Byzantine participants do. Gradient attacks are called as "
        "`attack(honest, f, *, rule=None, generator=None, **params)` on the honest "
        "vectors (h, d) and return (f, d); data attacks relabel a worker's batches. "
        "These pages are generated from the registry (`byzance.attacks`); "
        "`byzance attacks` prints the same list.\n",
        "| attack | kind | summary | paper |",
        "| --- | --- | --- | --- |",
    ]
    out += [
        f"| [{a.name}]({a.name}.md) | {a.kind} | {a.summary} | {a.paper} |"
        for a in attacks.attacks()
    ]
    return "\n".join(out) + "\n"


def pages() -> dict[str, str]:
    """Every generated page, by its path under docs/."""
    out = {"rules/index.md": rules_index(), "attacks/index.md": attacks_index()}
    for rule in aggregators.rules():
        out[f"rules/{rule.name}.md"] = rule_page(rule)
    for attack in attacks.attacks():
        out[f"attacks/{attack.name}.md"] = attack_page(attack)
    return out


def config_keys() -> str:
    """The run config's keys (every one is also a flag of ``byzance train``), from RunConfig."""
    from dataclasses import MISSING, fields

    from byzance.runs.config import RunConfig

    comments = dict(
        re.findall(r"^\s+(\w+): [^#\n]*#\s*(.*)$", inspect.getsource(RunConfig), flags=re.M)
    )
    rows = [
        "## Run config keys\n",
        "The keys of a run config (`byzance train --config run.toml`); every key is also "
        "a flag of `byzance train` (`--aggregator krum --f 4`). Generated from "
        "`byzance.runs.config.RunConfig`.\n",
        "| key | type | default | note |",
        "| --- | --- | --- | --- |",
    ]
    for field in fields(RunConfig):
        default = field.default if field.default is not MISSING else field.default_factory()
        note = comments.get(field.name, "")
        cells = (f"`{field.name}`", f"`{field.type}`", f"`{default!r}`", note)
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"
