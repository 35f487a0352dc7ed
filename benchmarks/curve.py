"""Turn the records of one benchmark section (or several) into a curve: a markdown table and a PNG plot.

    python benchmarks/curve.py --dataset=amazon-beauty --section=asarrec-robustness-6-epochs \\
        --x=train_noise_ratio --metric=ndcg@10 --series model,augmentation
    python benchmarks/curve.py --dataset=amazon-beauty \\
        --section asarrec-robustness-a asarrec-robustness-b --name=asarrec-robustness \\
        --x=train_noise_ratio --metric=ndcg@10 --series model,augmentation

Reads ``benchmarks/results/runs/<dataset>-<section>.json`` (written by ``benchmarks/run.py``) of each
``--section``, puts every ``ok`` record at the point (its ``--x`` value, its ``--metric`` test
value) of the series named by its ``--series`` values, and writes

- ``benchmarks/results/runs/<dataset>-<name>-<metric without @>.png``: one line with markers per
  series;
- the section ``<name>-curve`` of ``benchmarks/results/runs/<dataset>.md``: the metric per series
  and x value, each series' relative difference to a reference series, and a link to the PNG.

``<name>`` is the section's own name when one section is given; with several (e.g. one robustness
grid split over two ``run.py`` processes run in parallel) ``--name`` is required. Each section's
records take their defaults from that section's own ``config_files``, ``cpu_protocol`` and
dataset; one (series, x) point found in two sections is an error, never a silent pick.

Both are written atomically, under the same lock on the results folder as ``run.py``'s writes,
and only when every input checks out. Exit code 0 on success, 2 on bad input (nothing written).
"""

import argparse
import json
import os
import sys

import yaml

# the section markers, lock and atomic writes every results section shares (benchmarks/common.py)
if __package__ in (None, ""):  # run as a script (python benchmarks/curve.py): the repository is the import root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common as bench  # noqa: E402

UsageError = bench.UsageError
MISSING = "—"  # a point with no ok record


def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/curve.py",
        description="Plot the test metric of one benchmark section (or several) against a setting, one line per "
        "series, and write the section <name>-curve of benchmarks/results/runs/<dataset>.md (see benchmarks/README.md).",
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. amazon-beauty")
    parser.add_argument(
        "--section", nargs="+", required=True, metavar="SECTION",
        help="the run.py section(s) whose JSON to read; several are merged (e.g. one grid run by two processes)",
    )
    parser.add_argument(
        "--name", default=None,
        help="name of the curve: section <name>-curve and the PNG <dataset>-<name>-<metric>.png "
        "(default: the section; required with several sections)",
    )
    parser.add_argument("--x", required=True, help="numeric setting on the x axis, e.g. train_noise_ratio")
    parser.add_argument("--metric", required=True, help="test metric on the y axis, e.g. ndcg@10")
    parser.add_argument(
        "--series", default="model,augmentation",
        help="comma-separated settings whose values make one line (default: model,augmentation); "
        "'model' and 'label' are the record's own fields, a setting a record lacks counts as empty",
    )
    parser.add_argument("--reference", default=None, help="series the relative differences divide by (default: the first series)")
    parser.add_argument("--results_dir", default=bench.RUNS_DIR, help="where the JSON is read and the PNG and <dataset>.md are written")
    return parser


# ============================================================================ reading
def read_section(path):
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise UsageError(f"{path} not found (run benchmarks/run.py with this --dataset and --section first)") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise UsageError(f"{path} has no list of records (not written by benchmarks/run.py?)")
    return data


def read_yaml(path):
    try:
        with open(path, encoding="utf-8") as handle:
            return yaml.safe_load(handle) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def config_layers(data, model):
    """What a record's model ran with beneath its ``overrides``, lowest first, as run.py lays it:
    this plugin's overall and model YAML, the dataset YAML, the CPU protocol, ``--config_files``.
    Read now, so a YAML changed since the run gives today's default (the JSON's ``settings``
    win wherever they hold the key)."""
    properties = os.path.join(bench.REPO, "properties")
    files = [
        os.path.join(properties, "overall.yaml"),
        os.path.join(properties, "model", f"{model}.yaml"),
        os.path.join(properties, "dataset", f"{data.get('dataset')}.yaml"),
    ]
    layers = [read_yaml(path) for path in files if os.path.isfile(path)]
    layers.append(data.get("cpu_protocol") or {})
    layers += [read_yaml(path) for path in data.get("config_files") or []]
    return layers


def setting(record, key, layers):
    """A record's value of ``key``: its own field for ``model`` / ``label``, else ``settings``
    (what it ran with), its ``overrides`` (the command line), then ``layers``; None if absent."""
    if key in ("model", "label"):
        return record.get(key)
    for source in (record.get("settings") or {}, record.get("overrides") or {}, *reversed(layers)):
        if source.get(key) is not None:
            return source[key]
    return None


def series_name(keys, values):
    """``AsarRec (static_cl4srec)``; several settings besides the model read ``key=value``."""
    named = [(k, v) for k, v in zip(keys, values) if v != ""]
    if keys[0] == "model" and values[0] != "":
        head, rest = values[0], named[1:]
    else:
        head, rest = "", named
    if len(keys) - (keys[0] == "model") == 1:
        extra = [v for _, v in rest]
    else:
        extra = [f"{k}={v}" for k, v in rest]
    if not head:
        return ", ".join(extra) or "(no value)"
    return f"{head} ({', '.join(extra)})" if extra else head


def collect(sources, args):
    """The curve: ``{"x_values", "series": [{"name", "points": {x: value}, "labels"}], ...}``.

    ``sources``: ``[{"section", "data", "json_path"}]``, one per ``--section``, in the order given;
    each record is resolved against the config layers of its own section's JSON."""
    keys = [key.strip() for key in args.series.split(",") if key.strip()]
    if not keys:
        raise UsageError("--series: give at least one setting, e.g. model,augmentation")
    metric = args.metric.lower()
    files = ", ".join(source["json_path"] for source in sources)
    tagged = [
        (source, r) for source in sources for r in source["data"]["records"] if isinstance(r, dict) and r.get("label")
    ]
    records = [r for _, r in tagged]
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise UsageError(f"{files} {'has' if len(sources) == 1 else 'have'} no record with status ok yet")
    known = sorted({k for r in ok for k in (r.get("test_result") or {})})
    if not any(metric in (r.get("test_result") or {}) for r in ok):
        raise UsageError(f"--metric: {args.metric!r} is in no ok record of {files} (they have: {', '.join(known)})")
    layers_of = {}
    series, x_values, hidden = {}, set(), set()
    for source, record in tagged:
        section = source["section"]
        key = (section, record.get("model"))
        if key not in layers_of:
            layers_of[key] = config_layers(source["data"], record.get("model"))
        layers = layers_of[key]
        raw_x = setting(record, args.x, layers)
        try:
            x = 0.0 if raw_x is None else float(raw_x)
        except (TypeError, ValueError):
            raise UsageError(f"--x: {args.x} of record {record['label']!r} is {raw_x!r}, not a number") from None
        values = tuple("" if v is None else str(v) for v in (setting(record, k, layers) for k in keys))
        line = series.setdefault(values, {"name": series_name(keys, values), "points": {}, "point_labels": {}, "labels": []})
        line["labels"].append((section, record["label"]))
        x_values.add(x)
        if record.get("status") != "ok" or metric not in (record.get("test_result") or {}):
            continue
        if x in line["points"]:
            other_section, other_label = line["point_labels"][x]
            if other_section != section:
                raise UsageError(
                    f"--section: the point {line['name']} at {args.x}={x:g} is in section {other_section!r} (record "
                    f"{other_label!r}) and in section {section!r} (record {record['label']!r}); give only one of the "
                    "two sections, or add the setting that tells them apart to --series"
                )
            raise UsageError(
                f"--series: records {other_label!r} and {record['label']!r} both fall on {line['name']} at {args.x}={x:g}; "
                "add the setting that tells them apart to --series"
            )
        line["points"][x] = float(record["test_result"][metric])
        line["point_labels"][x] = (section, record["label"])
        hidden.add(setting(record, "hidden_size", layers))
    lines = list(series.values())
    names = [line["name"] for line in lines]
    if len(set(names)) != len(names):
        raise UsageError(f"--series: two series read the same ({', '.join(names)}); name every setting, e.g. --series {args.series},label")
    reference = args.reference if args.reference is not None else names[0]
    if reference not in names:
        raise UsageError(f"--reference: {reference!r} is not a series ({', '.join(names)})")
    return {
        "metric": metric,
        "x_values": sorted(x_values),
        "series": lines,
        "reference": reference,
        "hidden": sorted(str(h) for h in hidden if h is not None),
        "ok": len(ok),
        "records": len(records),
        "incomplete": [source["section"] for source in sources if source["data"].get("finished") is None],
    }


# ============================================================================ rendering
def relative(value, ref):
    if value is None or not ref:
        return MISSING
    return f"{(value - ref) / ref * 100:+.1f}%"


def caption(curve):
    hidden = ", ".join(curve["hidden"]) or "?"
    return f"CPU protocol, hidden {hidden}; test metric of the checkpoint with the best valid score"


def quoted_sections(sections):
    return ", ".join(f"`{section}`" for section in sections)


def render_markdown(curve, args, data, sources, png_path, md_path, command):
    metric = bench.metric_title(curve["metric"])
    xs = curve["x_values"]
    head = "| Series \\ " + bench.cell(args.x) + " | " + " | ".join(f"{x:g}" for x in xs) + " |"
    rule = "|---|" + "---:|" * len(xs)
    ref_points = next(s for s in curve["series"] if s["name"] == curve["reference"])["points"]
    where = "the repository root" if os.getcwd() == bench.REPO else f"`{os.getcwd()}`"
    several = len(sources) > 1
    lines = [f"## {args.name}-curve", ""]
    pending = curve["incomplete"]
    if pending:
        which = f"section{'s' if len(pending) > 1 else ''} {quoted_sections(pending)} {'are' if len(pending) > 1 else 'is'}"
        lines += [f"**Incomplete run: drawn from the {curve['records']} records written so far; redraw when {which} complete.**", ""]
    if several:
        files = ", ".join(f"`{source['section']}` (`{os.path.basename(source['json_path'])}`)" for source in sources)
        origin = f"of sections {files}, merged (their commands, machines and per-model settings are in those sections)"
    else:
        origin = (
            f"of section `{sources[0]['section']}` (`{os.path.basename(sources[0]['json_path'])}`; its command, "
            "machine and per-model settings are in that section)"
        )
    lines += [
        f"Command (run from {where}):", "", "    " + command, "",
        f"- Test {metric} against `{args.x}`, one series per value of `{args.series}`, from the {curve['ok']} ok "
        f"of {curve['records']} records {origin}.",
        f"- {caption(curve)}. {MISSING}: no ok record at that point (failed or not run).",
        "- A setting missing from a record's `settings` is taken from its overrides, then from this plugin's "
        "current YAML; a series setting found nowhere is empty, a missing x is 0.",
        "",
        f"Test {metric}:", "", head, rule,
    ]
    for line in curve["series"]:
        cells = [MISSING if x not in line["points"] else f"{line['points'][x]:.4f}" for x in xs]
        lines.append(f"| {bench.cell(line['name'])} | " + " | ".join(cells) + " |")
    others = [line for line in curve["series"] if line["name"] != curve["reference"]]
    if others:
        ref = curve["reference"]
        lines += ["", f"Relative difference to {ref}, (series − {ref}) / {ref} at the same `{args.x}`:", "", head, rule]
    for line in others:
        cells = [relative(line["points"].get(x), ref_points.get(x)) for x in xs]
        lines.append(f"| {bench.cell(line['name'])} | " + " | ".join(cells) + " |")
    lines += ["", "Records per series:", ""]
    def name(section, label):
        return f"`{label}` (`{section}`)" if several else f"`{label}`"

    lines += [f"- {line['name']}: " + ", ".join(name(*label) for label in line["labels"]) for line in curve["series"]]
    image = os.path.relpath(png_path, os.path.dirname(md_path))
    lines += ["", f"![{data.get('dataset')} {args.name}: test {metric} against {args.x}]({image})", ""]
    return "\n".join(lines)


def build_figure(curve, args, data):
    """The plot on matplotlib's Agg canvas (no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = bench.metric_title(curve["metric"])
    figure = Figure(figsize=(7, 4.8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for line in curve["series"]:
        xs = sorted(line["points"])
        if xs:
            axes.plot(xs, [line["points"][x] for x in xs], marker="o", label=line["name"])
    axes.set_xticks(curve["x_values"])
    axes.set_xlabel(args.x)
    axes.set_ylabel(f"test {metric}")
    axes.set_title(f"{data.get('dataset')}: {args.name}\ntest {metric} against {args.x}")
    axes.grid(alpha=0.3)
    axes.legend()
    note = caption(curve) + ("; INCOMPLETE RUN" if curve["incomplete"] else "")
    figure.text(0.01, 0.01, note, fontsize=8, color="0.3")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure


def save_png(figure, path):
    """Save through a temporary file in the same folder and ``os.replace``: never half a PNG."""
    with bench.atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")


# ============================================================================ main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    results_dir = os.path.abspath(args.results_dir)
    md_path = os.path.join(results_dir, f"{args.dataset}.md")
    command = bench.display_command(argv, __file__)
    try:
        for section in args.section:
            bench.check_name(section, "--section")
        repeated = sorted({section for section in args.section if args.section.count(section) > 1})
        if repeated:
            raise UsageError(f"--section: {', '.join(repeated)} given more than once")
        if args.name is None:
            if len(args.section) > 1:
                example = os.path.commonprefix(args.section).rstrip("-_.@+") or "curve"
                raise UsageError(
                    f"--name: required with several sections ({', '.join(args.section)}); it names the section "
                    f"<name>-curve and the PNG, e.g. --name={example}"
                )
            args.name = args.section[0]
        else:
            bench.check_name(args.name, "--name")
        if not args.dataset or os.sep in args.dataset:
            raise UsageError(f"--dataset: {args.dataset!r} is not a dataset name")
        png_path = os.path.join(results_dir, bench.slug(f"{args.dataset}-{args.name}-{args.metric.lower().replace('@', '')}") + ".png")
        sources = []
        for section in args.section:
            json_path = os.path.join(results_dir, f"{args.dataset}-{section}.json")
            sources.append({"section": section, "data": read_section(json_path), "json_path": json_path})
        data = sources[0]["data"]
        curve = collect(sources, args)
        body = render_markdown(curve, args, data, sources, png_path, md_path, command)
        try:
            figure = build_figure(curve, args, data)
        except ImportError:
            raise UsageError("matplotlib is not installed: pip install -e '.[plot]'") from None
        with bench.locked(results_dir):
            text = bench.read_proc(md_path) if os.path.exists(md_path) else bench.FILE_HEADER.format(dataset=args.dataset)
            try:
                new_text = bench.replace_section(text, f"{args.name}-curve", body)
            except ValueError as exc:
                raise UsageError(f"{md_path}: {exc}") from None
            save_png(figure, png_path)
            bench.atomic_write(md_path, new_text)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote section {args.name}-curve of {md_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
