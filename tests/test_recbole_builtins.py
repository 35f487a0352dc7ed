"""Every model in RecBole's registry (general, sequential, context-aware, knowledge-based) trains one
epoch and is evaluated through this plugin's ``objective_function`` (what ``run_recbole_diff.py``
and ``HyperTuning`` call), with RecBole's own defaults: a built-in trained with ``loss_type: BPR``
gets RecBole's negative samples, not this plugin's "none".

The data is a tiny cut of RecBole's embedded ml-100k with all of its atomic files (users, items,
the knowledge graph and its item links), so the context and knowledge models have their features.
"""

import os

import pytest
import recbole

from recbole_diffusion.utils import recbole_model_names

USERS, PER_USER = 40, 20
SOURCE = os.path.join(os.path.dirname(recbole.__file__), "dataset_example", "ml-100k")
NAME = "mini"
# each model's settings beyond RecBole's defaults, as RecBole's own model tests give them: the
# autoencoders train without negative samples, the CTR models need a label from the rating
NO_NEGATIVES = {"MultiDAE", "MultiVAE", "ENMF", "MacridVAE", "CDAE", "RecVAE", "EASE", "SLIMElastic", "ADMMSLIM", "NCEPLRec"}
SETTINGS = {
    "ItemKNN": {"knn_method": "item"},
    "DGCF": {"train_batch_size": 32},  # its correlation sample (items / batches) must fit in the users
    "FISM": {"split_to": 10},
    "NAIS": {"split_to": 10},
    "NCL": {"num_clusters": 10},
    "KTUP": {"train_rec_step": 1, "train_kg_step": 1},
    "Caser": {"MAX_ITEM_LIST_LENGTH": 10, "reproducibility": False},
    "NextItNet": {"reproducibility": False},
    "SRGNN": {"MAX_ITEM_LIST_LENGTH": 3},
    "GCSAN": {"MAX_ITEM_LIST_LENGTH": 3},
    "SHAN": {"transform": "inverse_itemseq"},
    "BERT4Rec": {"transform": "mask_itemseq"},
    "LDiffRec": {"time-aware": True},
}
# not trainable through any entry point in one plain run: S3Rec pre-trains then fine-tunes in two
# runs; XGBoost and LightGBM need packages this project does not install; RecBole's general DiffRec
# shares its name with this plugin's DiffRec, which --model=DiffRec runs
SKIPPED = {"s3rec": "two runs (pretrain, then finetune)", "xgboost": "needs xgboost", "lightgbm": "needs lightgbm",
           "diffrec": "the name runs this plugin's DiffRec",
           "gru4reckg": "needs pretrained entity embeddings (a .ent file)", "ksr": "needs pretrained entity embeddings (a .ent file)"}
# packages some RecBole models import that this project does not install: those models are skipped, named
OPTIONAL_PACKAGES = ("faiss", "dgl", "torch_scatter")


def registry():
    """(folder, file name) of every RecBole model, from the package's layout."""
    from recbole_diffusion.utils import _RECBOLE_MODEL_PACKAGES

    root = os.path.dirname(recbole.model.__file__)
    return [(sub, f[:-3]) for sub in _RECBOLE_MODEL_PACKAGES
            for f in sorted(os.listdir(os.path.join(root, sub))) if f.endswith(".py") and not f.startswith("_")]


def class_name(sub, module):
    import importlib

    package = importlib.import_module(f"recbole.model.{sub}")
    return next(n for n in dir(package) if n.lower() == module)


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory):
    """(data_path, name): the last PER_USER ratings of the first USERS users of ml-100k, with their
    users, items, item-entity links and the knowledge-graph triples of those entities."""
    folder = tmp_path_factory.mktemp("builtins")
    target = folder / NAME
    target.mkdir()

    def rows(ext):
        with open(os.path.join(SOURCE, f"ml-100k.{ext}"), encoding="utf-8") as handle:
            header = handle.readline()
            return header, [line.rstrip("\n").split("\t") for line in handle]

    header, inter = rows("inter")
    by_user = {}
    for row in inter:
        if int(row[0]) <= USERS:
            by_user.setdefault(row[0], []).append(row)
    kept = [r for user in sorted(by_user, key=int) for r in sorted(by_user[user], key=lambda r: float(r[3]))[-PER_USER:]]
    items = {r[1] for r in kept}
    links_header, links = rows("link")
    links = [r for r in links if r[0] in items]
    entities = {r[1] for r in links}
    kg_header, kg = rows("kg")
    kg = [r for r in kg if r[0] in entities][:2000]
    tables = {
        "inter": (header, kept), "link": (links_header, links), "kg": (kg_header, kg),
        "user": (lambda h, r: (h, [x for x in r if x[0] in by_user]))(*rows("user")),
        "item": (lambda h, r: (h, [x for x in r if x[0] in items]))(*rows("item")),
    }
    for ext, (head, body) in tables.items():
        with open(target / f"{NAME}.{ext}", "w", encoding="utf-8") as out:
            out.write(head + "".join("\t".join(r) + "\n" for r in body))
    return str(folder), NAME


def cases():
    out = []
    for sub, module in registry():
        if module in SKIPPED or sub == "exlib_recommender":
            continue
        out.append(pytest.param(sub, module, id=module))
    return out


@pytest.mark.parametrize("sub, module", cases())
def test_every_recbole_model_trains_and_evaluates_through_our_objective_function(mini_data, tmp_path, monkeypatch, sub, module):
    from recbole_diffusion.quick_start import objective_function

    monkeypatch.chdir(tmp_path)  # RecBole's log folders
    name = class_name(sub, module)
    data_path, dataset = mini_data
    config = {
        "model": name, "dataset": dataset, "data_path": data_path, "epochs": 1, "gpu_id": "",
        "show_progress": False, "state": "ERROR", "train_batch_size": 256, "eval_batch_size": 256,
        "load_col": {"inter": ["user_id", "item_id", "rating", "timestamp"], "user": ["user_id", "age", "gender", "occupation"],
                     "item": ["item_id", "release_year", "class"], "link": ["item_id", "entity_id"],
                     "kg": ["head_id", "relation_id", "tail_id"]},
        **SETTINGS.get(name, {}),
    }
    if name in NO_NEGATIVES:
        config["train_neg_sample_args"] = None
    if sub == "context_aware_recommender":
        config["threshold"] = {"rating": 4}
    try:
        result = objective_function(config_dict=config, saved=False)
    except ModuleNotFoundError as exc:
        if exc.name not in OPTIONAL_PACKAGES:
            raise
        pytest.skip(f"RecBole's {name} needs {exc.name}, which this project does not install")
    assert result["model"] == name
    assert result["test_result"], result


def test_the_registry_is_recboles_whole_model_list():
    """Every file the registry walks is a model name RecBole resolves; none is missed."""
    assert sorted(m for _, m in registry()) == sorted(recbole_model_names())
    assert set(SKIPPED) <= {m for _, m in registry()}  # every skip names a model RecBole has
    assert len(cases()) >= 85
