"""Turn one benchmark section's records into a curve: a markdown table and a PNG plot.

    python benchmarks/curve.py --dataset=amazon-beauty --section=asarrec-robustness-6-epochs \\
        --x=train_noise_ratio --metric=ndcg@10 --series model,augmentation

Reads ``benchmarks/results/<dataset>-<section>.json`` (written by ``benchmarks/run.py``), puts
every ``ok`` record at the point (its ``--x`` value, its ``--metric`` test value) of the series
named by its ``--series`` values, and writes

- ``benchmarks/results/<dataset>-<section>-<metric without @>.png``: one line with markers per
  series;
- the section ``<section>-curve`` of ``benchmarks/results/<dataset>.md``: the metric per series
  and x value, each series' relative difference to a reference series, and a link to the PNG.

Both are written atomically, under the same lock on the results folder as ``run.py``'s writes,
and only when every input checks out. Exit code 0 on success, 2 on bad input (nothing written).
"""

import argparse
import json
import os
import shlex
import sys

import yaml

# run.py's section markers, lock and atomic writes are the ones this script must share; it lies
# beside this file (benchmarks/ is not a package), which a test that imports this file may not
# have on its path
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
import run as bench  # noqa: E402

UsageError = bench.UsageError
MISSING = "—"  # a point with no ok record


def build_parser():
    parser = argparse.ArgumentParser(
        prog="benchmarks/curve.py",
        description="Plot one benchmark section's test metric against a setting, one line per series, "
        "and write the section <section>-curve of benchmarks/results/<dataset>.md (see benchmarks/README.md).",
    )
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. amazon-beauty")
    parser.add_argument("--section", required=True, help="the run.py section whose JSON to read")
    parser.add_argument("--x", required=True, help="numeric setting on the x axis, e.g. train_noise_ratio")
    parser.add_argument("--metric", required=True, help="test metric on the y axis, e.g. ndcg@10")
    parser.add_argument(
        "--series", default="model,augmentation",
        help="comma-separated settings whose values make one line (default: model,augmentation); "
        "'model' and 'label' are the record's own fields, a setting a record lacks counts as empty",
    )
    parser.add_argument("--reference", default=None, help="series the relative differences divide by (default: the first series)")
    parser.add_argument("--results_dir", default=os.path.join(bench.REPO, "benchmarks", "results"), help="where the JSON is read and the PNG and <dataset>.md are written")
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


def collect(data, args, json_path):
    """The curve: ``{"x_values", "series": [{"name", "points": {x: value}, "labels"}], ...}``."""
    keys = [key.strip() for key in args.series.split(",") if key.strip()]
    if not keys:
        raise UsageError("--series: give at least one setting, e.g. model,augmentation")
    metric = args.metric.lower()
    records = [r for r in data["records"] if isinstance(r, dict) and r.get("label")]
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise UsageError(f"{json_path} has no record with status ok yet")
    known = sorted({k for r in ok for k in (r.get("test_result") or {})})
    if not any(metric in (r.get("test_result") or {}) for r in ok):
        raise UsageError(f"--metric: {args.metric!r} is in no ok record of {json_path} (they have: {', '.join(known)})")
    layers_of = {}
    series, x_values, hidden = {}, set(), set()
    for record in records:
        layers = layers_of.setdefault(record.get("model"), config_layers(data, record.get("model")))
        raw_x = setting(record, args.x, layers)
        try:
            x = 0.0 if raw_x is None else float(raw_x)
        except (TypeError, ValueError):
            raise UsageError(f"--x: {args.x} of record {record['label']!r} is {raw_x!r}, not a number") from None
        values = tuple("" if v is None else str(v) for v in (setting(record, k, layers) for k in keys))
        line = series.setdefault(values, {"name": series_name(keys, values), "points": {}, "point_labels": {}, "labels": []})
        line["labels"].append(record["label"])
        x_values.add(x)
        if record.get("status") != "ok" or metric not in (record.get("test_result") or {}):
            continue
        if x in line["points"]:
            raise UsageError(
                f"--series: records {line['point_labels'][x]!r} and {record['label']!r} both fall on {line['name']} at {args.x}={x:g}; "
                "add the setting that tells them apart to --series"
            )
        line["points"][x] = float(record["test_result"][metric])
        line["point_labels"][x] = record["label"]
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
        "complete": data.get("finished") is not None,
    }


# ============================================================================ rendering
def relative(value, ref):
    if value is None or not ref:
        return MISSING
    return f"{(value - ref) / ref * 100:+.1f}%"


def caption(curve):
    hidden = ", ".join(curve["hidden"]) or "?"
    return f"CPU protocol, hidden {hidden}; test metric of the checkpoint with the best valid score"


def render_markdown(curve, args, data, json_path, png_path, md_path, command):
    metric = bench.metric_title(curve["metric"])
    xs = curve["x_values"]
    head = "| Series \\ " + bench.cell(args.x) + " | " + " | ".join(f"{x:g}" for x in xs) + " |"
    rule = "|---|" + "---:|" * len(xs)
    ref_points = next(s for s in curve["series"] if s["name"] == curve["reference"])["points"]
    where = "the repository root" if os.getcwd() == bench.REPO else f"`{os.getcwd()}`"
    lines = [f"## {args.section}-curve", ""]
    if not curve["complete"]:
        lines += [f"**Incomplete run: drawn from the {curve['records']} records written so far; redraw when section `{args.section}` is complete.**", ""]
    lines += [
        f"Command (run from {where}):", "", "    " + command, "",
        f"- Test {metric} against `{args.x}`, one series per value of `{args.series}`, from the {curve['ok']} ok "
        f"of {curve['records']} records of section `{args.section}` (`{os.path.basename(json_path)}`; its command, "
        "machine and per-model settings are in that section).",
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
    lines += [f"- {line['name']}: " + ", ".join(f"`{label}`" for label in line["labels"]) for line in curve["series"]]
    image = os.path.relpath(png_path, os.path.dirname(md_path))
    lines += ["", f"![{data.get('dataset')} {args.section}: test {metric} against {args.x}]({image})", ""]
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
    axes.set_title(f"{data.get('dataset')}: {args.section}\ntest {metric} against {args.x}")
    axes.grid(alpha=0.3)
    axes.legend()
    note = caption(curve) + ("" if curve["complete"] else "; INCOMPLETE RUN")
    figure.text(0.01, 0.01, note, fontsize=8, color="0.3")
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    return figure


def save_png(figure, path):
    """Save through a temporary file in the same folder and ``os.replace``: never half a PNG."""
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


# ============================================================================ main
def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    results_dir = os.path.abspath(args.results_dir)
    json_path = os.path.join(results_dir, f"{args.dataset}-{args.section}.json")
    md_path = os.path.join(results_dir, f"{args.dataset}.md")
    png_path = os.path.join(results_dir, bench.slug(f"{args.dataset}-{args.section}-{args.metric.lower().replace('@', '')}") + ".png")
    command = shlex.join(["python", os.path.relpath(os.path.abspath(__file__)), *argv])
    try:
        if not bench.SECTION_RE.match(args.section):
            raise UsageError(f"--section: {args.section!r} is not a section name (letters, digits, _ . @ + -)")
        if not args.dataset or os.sep in args.dataset:
            raise UsageError(f"--dataset: {args.dataset!r} is not a dataset name")
        data = read_section(json_path)
        curve = collect(data, args, json_path)
        body = render_markdown(curve, args, data, json_path, png_path, md_path, command)
        try:
            figure = build_figure(curve, args, data)
        except ImportError:
            raise UsageError("matplotlib is not installed: pip install -e '.[plot]'") from None
        with bench.locked(results_dir):
            text = bench.read_proc(md_path) if os.path.exists(md_path) else bench.FILE_HEADER.format(dataset=args.dataset)
            try:
                new_text = bench.replace_section(text, f"{args.section}-curve", body)
            except ValueError as exc:
                raise UsageError(f"{md_path}: {exc}") from None
            save_png(figure, png_path)
            bench.atomic_write(md_path, new_text)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote section {args.section}-curve of {md_path} and {png_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
