"""MkDocs hooks (``hooks:`` in mkdocs.yml): the parts of the docs generated, at build time, from
the tables the code runs on, so that what segcheck registers and what the site says cannot drift.

- **One page per gate family** (``perturbation_stability[jpeg]`` and its siblings share
  ``gates/perturbation_stability.md``): every gate a built-in plugin registers gets a page. Its
  facts (suite, markers, needs, the registry's description of each member, the settings of its
  section with defaults and ranges) are generated from the gate registry and
  ``segcheck/config.py``; the hand-written prose is ``docs/gates/<family>.md``, into which the
  facts are inserted (at ``<!-- generated: gate-facts -->``, else under the title). A gate with
  no prose file still gets its page, generated, saying that its prose is missing;
  ``tests/test_docs.py`` fails on it (and on a prose page that names no registered gate).
- **The navigation of the gates**, grouped by suite, built from the registry.
- **Tables** that a page asks for with ``<!-- generated: NAME -->`` (see :data:`TABLES`): the
  gate list, the settings with their ranges, the pytest options, the ``segcheck`` command's options.

``tests/test_docs.py`` imports this file (it is excluded from the site).
"""

from __future__ import annotations

import argparse
import functools
import inspect
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent
GATES = DOCS / "gates"
#: files of docs/gates/ that are no gate's prose
NOT_GATE_PAGES = ("index.md",)
MARKER = re.compile(r"<!-- generated: ([a-z-]+) -->")
SUITES = {
    "gates": ("Closed-set gates", "suites/gates"),
    "anomaly": ("Anomaly segmentation", "suites/anomaly"),
    "prompted": ("Text-prompted models", "suites/prompted"),
    "fleet": ("Fleet", "a run of two or more targets"),
}
NEEDS = {
    "labels": "eval masks with labelled pixels",
    "masks": "eval masks, whatever they hold",
    "prompts": "a text-prompted model on a dataset with prompts",
    "train_split": "a labelled `train` split",
    "held_out_split": "a labelled held-out split (the section's `split`)",
    "fresh_model": "a builder, to make a fresh copy of the architecture",
    "cuda": "CUDA",
    "finite_logits": "finite logits on the eval images (else an ERROR pointing to finite_outputs)",
    "varied_prediction": "a prediction that is not one class everywhere and depends on the input (else a SKIP)",
    "reads_images": "a model that reads its images: noise_input and prediction_collapse pass on the target "
    "(else a SKIP naming the one that fails)",
}
MARKERS = {
    "train": 'trains a model: left out by `-m "not train"`',
    "gpu": "needs a GPU",
    "fleet": "runs once over a fleet of targets, not per target",
}


# ---------------------------------------------------------------- the registry


@functools.cache
def builtin_gates() -> tuple:
    """Every gate registered by segcheck's own plugins (no entry point, no ``--plugin``)."""
    from segcheck import plugins
    from segcheck.gates.registered import BUILTIN_GATE_PLUGINS

    return tuple(g for g in plugins.load(entry_points=False).gates.gates() if g.plugin.startswith(BUILTIN_GATE_PLUGINS))


def families() -> dict[str, list]:
    """``{family: [its gates]}``, in registration order."""
    from segcheck.gates.registered import family

    grouped: dict[str, list] = {}
    for gate in builtin_gates():
        grouped.setdefault(family(gate.name), []).append(gate)
    return grouped


def prose_pages() -> set[str]:
    """The families that have a hand-written page, ``docs/gates/<family>.md``."""
    return {p.stem for p in GATES.glob("*.md") if p.name not in NOT_GATE_PAGES}


def missing_prose() -> list[str]:
    """Registered built-in gate families without their hand-written page."""
    return sorted(set(families()) - prose_pages())


def unknown_pages() -> list[str]:
    """Hand-written gate pages that name no registered built-in gate family."""
    return sorted(prose_pages() - set(families()))


def _doc(gate) -> str:
    """The gate's description: its registered one, or (when it is the docstring's first line)
    the docstring's first paragraph, joined into one line."""
    doc = inspect.getdoc(gate.function) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    text = paragraph if gate.description and paragraph.startswith(gate.description.strip()) else gate.description
    return text.replace("``", "`")  # reStructuredText literals as Markdown code


def _section(gate) -> dict | None:
    from segcheck.config import DEFAULTS

    if not gate.section:
        return None
    return gate.defaults if gate.defaults is not None else DEFAULTS.get(gate.section)


# ---------------------------------------------------------------- rendering


def _value(value) -> str:
    if isinstance(value, str):
        return f'`"{value}"`' if value == "" else f"`{value}`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value}`"
    if isinstance(value, float):
        return f"`{value:g}`"
    return f"`{value}`"


def _kind(section: str, key: str, value) -> tuple[str, str]:
    """(type, range) of a setting, as ``segcheck.config`` checks it."""
    from segcheck.config import RANGES, STRING_LISTS

    if f"{section}.{key}".endswith(STRING_LISTS):
        return "list of strings", "-"
    if isinstance(value, list):
        return "list of numbers", "-"
    if isinstance(value, bool):
        return "true/false", "-"
    bounds = RANGES.get(f"{section}.{key}", RANGES.get(key)) or "-"
    if isinstance(value, float):
        return "number", f"`{bounds}`" if bounds != "-" else "-"
    if isinstance(value, int):
        return "whole number", f"`{bounds}`" if bounds != "-" else "-"
    return "string", "-"


def settings_table(section: str, values: dict) -> list[str]:
    rows = ["| setting | default | type | range |", "|---|---|---|---|"]
    for key, value in values.items():
        kind, bounds = _kind(section, key, value)
        rows.append(f"| `{section}.{key}` | {_value(value)} | {kind} | {bounds} |")
    return rows


def gate_facts(name: str, prefix: str = "../") -> str:
    """The generated part of the page of gate family ``name``."""
    members = families()[name]
    first = members[0]
    label, where = _suites()[first.suite]
    lines = ['!!! abstract "From the gate registry"', ""]
    body = [
        f"**Suite:** {label} (`{where}`). **Registered by:** `{first.plugin}`.",
        "",
    ]
    if len(members) == 1:
        body += [f"**What the registry says:** {_doc(first)}", ""]
    else:
        body += ["**Registered gates** (one test each):", ""]
        body += [f"- `{g.name}`: {_doc(g)}" for g in members]
        body += [""]
    if first.markers:
        body += ["**Markers:** " + "; ".join(f"`{m}` ({MARKERS.get(m, m)})" for m in first.markers), ""]
    if first.needs:
        body += [
            "**Needs** (unmet: a SKIP with the reason): "
            + "; ".join(f"`{n}` ({NEEDS.get(n, n)})" for n in first.needs),
            "",
        ]
    values = _section(first)
    if values:
        readers = sorted({g for g, gates in _section_readers().items() if first.section in gates} - {name})
        shared = f" (shared with {', '.join(f'[{r}]({r}.md)' for r in readers)})" if readers else ""
        body += [
            f"**Settings**, section `{first.section}`{shared}; set them in `segcheck.yaml` as "
            f"`{first.section}: {{key: value}}` ([all settings]({prefix}reference/settings.md#{first.section})):",
            "",
            *settings_table(first.section, values),
            "",
        ]
    else:
        body += ["**Settings:** none.", ""]
    body += [f"**A failure message ends with** `docs: gates/{name}.md`, this page."]
    lines += ["    " + line if line else "" for line in body]
    return "\n".join(lines) + "\n"


@functools.cache
def _section_readers() -> dict[str, set[str]]:
    from segcheck.gates.registered import family

    readers: dict[str, set[str]] = {}
    for gate in builtin_gates():
        if gate.section:
            readers.setdefault(family(gate.name), set()).add(gate.section)
    return readers


def generated_gate_page(name: str) -> str:
    """The page of a gate family that has no hand-written prose yet."""
    return (
        f"# {name}\n\n"
        + "<!-- generated: gate-facts -->\n"
        + '\n!!! warning "No hand-written explanation yet"\n\n'
        + f"    `docs/gates/{name}.md` is missing: add what the gate measures, its default rule, why it\n"
        + "    matters, what a failure usually means and what fixes it (`tests/test_docs.py` lists it).\n"
    )


def _suites() -> dict[str, tuple[str, str]]:
    """The suites of the registered gates: the known ones in order, then any other a gate names."""
    named = {gates[0].suite for gates in families().values()}
    return {**SUITES, **{s: (s, s) for s in sorted(named - set(SUITES))}}


def gate_table() -> str:
    """Every registered built-in gate, by suite: name, what it measures, markers."""
    out = []
    grouped = families()
    for suite, (label, where) in _suites().items():
        names = [n for n, gates in grouped.items() if gates[0].suite == suite]
        if not names:
            continue
        out += [f"### {label}", "", f"Run by `{where}`.", "", "| gate | what it measures | markers |", "|---|---|---|"]
        for name in sorted(names):
            gates = grouped[name]
            shown = f"[`{name}`]({name}.md)"
            doc = _doc(gates[0])
            if len(gates) > 1:
                kinds = ", ".join(g.name[len(name) + 1 : -1] for g in gates)
                doc = f"one test each ({name}[{kinds}]), e.g. `{gates[0].name}`: {doc}"
            out.append(f"| {shown} | {_cell(doc)} | {', '.join(gates[0].markers) or '-'} |")
        out.append("")
    return "\n".join(out)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def settings_reference() -> str:
    """Every section of ``segcheck/config.py``'s DEFAULTS, with the gates that read it."""
    from segcheck.config import DEFAULTS

    readers: dict[str, list[str]] = {}
    for name, sections in sorted(_section_readers().items()):
        for section in sections:
            readers.setdefault(section, []).append(name)
    out = []
    sections = dict(DEFAULTS)
    for gate in builtin_gates():  # a built-in gate may define its own section with defaults=
        if gate.section and gate.defaults is not None:
            sections.setdefault(gate.section, gate.defaults)
    for section, values in sections.items():
        out += [f"### {section}", ""]
        if section in readers:
            out += ["Read by " + ", ".join(f"[{g}](../gates/{g}.md)" for g in readers[section]) + ".", ""]
        elif section in READ_BY:
            out += [READ_BY[section], ""]
        out += [*settings_table(section, values), ""]
    return "\n".join(out)


#: sections no gate reads directly
READ_BY = {
    "target": "What is under test when no option says otherwise (`--model`, `--dataset`, `--device`); "
    "`init_seed` seeds the random initialization of `--checkpoint none`.",
    "eval": "The eval sample every gate of a target shares: its split, size, seed, batching, normalization "
    "(`--mean/--std`), resize policy (`--eval-resize`) and memory limits.",
    "fleet_spread": "The fleet view's systematic-shortcut finding ([Fleets](../guides/fleets.md)).",
}


def pytest_options() -> str:
    """The segcheck group of pytest options (``segcheck/pytest_options.py``)."""
    from segcheck.pytest_options import OPTIONS

    out = ["| option | meaning |", "|---|---|"]
    for flag, (_dest, metavar, help, extra) in OPTIONS.items():
        shown = f"{flag} {{{','.join(extra['choices'])}}}" if "choices" in extra else flag
        shown = f"{shown} {metavar}" if metavar else shown
        repeat = " (repeatable)" if extra.get("action") == "append" and "repeatable" not in help else ""
        out.append(f"| `{shown}` | {_cell(help)}{repeat} |")
    return "\n".join(out) + "\n"


def cli_reference() -> str:
    """Every ``segcheck`` subcommand's options, from its argparse parser (``segcheck/cli.py``)."""
    from segcheck import cli

    parser = cli.parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {c.dest: c.help for c in sub._choices_actions}
    out = []
    for name, command in sub.choices.items():
        out += [f"### segcheck {name}", "", _cell(helps.get(name) or ""), ""]
        if name == "check":
            usage = f"`{cli.CHECK_USAGE}`: every pytest option and every [pytest option of segcheck](#pytest-options)."
            out += [usage, ""]
            continue
        rows = [a for a in command._actions if not isinstance(a, argparse._HelpAction)]
        if not rows:
            continue
        out += ["| argument | default | meaning |", "|---|---|---|"]
        for action in rows:
            flag = ", ".join(action.option_strings) or action.metavar or action.dest
            if action.choices:
                flag += " {" + ",".join(map(str, action.choices)) + "}"
            elif action.option_strings and action.nargs != 0:
                flag += f" {action.metavar or action.dest.upper()}"
            default = action.default
            shown = "-" if default in (None, False, [], argparse.SUPPRESS) else f"`{default}`"
            out.append(f"| `{flag}` | {shown} | {_cell((action.help or '').replace('%%', '%'))} |")
        out.append("")
    return "\n".join(out)


#: ``<!-- generated: NAME -->`` -> the function that writes it
TABLES = {
    "gate-table": gate_table,
    "settings": settings_reference,
    "pytest-options": pytest_options,
    "cli": cli_reference,
}


def expand(markdown: str, page_path: str) -> str:
    """``markdown`` with each ``<!-- generated: NAME -->`` replaced by its table; on a gate page,
    the gate's facts at ``gate-facts``, or under its title when the page has no marker."""
    family = _gate_family(page_path)

    def table(match: re.Match) -> str:
        name = match.group(1)
        if name == "gate-facts":
            if family is None:
                raise ValueError(f"{page_path}: <!-- generated: gate-facts --> outside a gate page")
            return gate_facts(family)
        if name not in TABLES:
            raise ValueError(f"{page_path}: unknown <!-- generated: {name} -->; known: gate-facts, {', '.join(TABLES)}")
        return TABLES[name]()

    if family is not None and "<!-- generated: gate-facts -->" not in markdown:
        title, _, rest = markdown.partition("\n")
        markdown = f"{title}\n\n<!-- generated: gate-facts -->\n{rest}"
    return MARKER.sub(table, markdown)


def _gate_family(page_path: str) -> str | None:
    path = Path(page_path)
    if path.parent.as_posix() == "gates" and path.name not in NOT_GATE_PAGES and path.stem in families():
        return path.stem
    return None


def gates_nav() -> list:
    """The nav of the gates: the overview, then each suite's gate pages."""
    grouped = families()
    nav: list = [{"Overview": "gates/index.md"}]
    for suite, (label, _) in _suites().items():
        names = sorted(n for n, gates in grouped.items() if gates[0].suite == suite)
        if names:
            nav.append({label: [{n: f"gates/{n}.md"} for n in names]})
    return nav


# ---------------------------------------------------------------- MkDocs events


def on_config(config):
    """Fill the nav's ``Gates`` entry from the registry."""
    for i, entry in enumerate(config["nav"] or []):
        if isinstance(entry, dict) and "Gates" in entry:
            config["nav"][i] = {"Gates": gates_nav()}
    return config


def on_files(files, config):
    """Add the generated page of every gate family without prose."""
    from mkdocs.structure.files import File

    for name in missing_prose():
        files.append(File.generated(config, f"gates/{name}.md", content=generated_gate_page(name)))
    return files


def on_page_markdown(markdown, page, config, files):
    return expand(markdown, page.file.src_uri)
