"""params.yaml, typed and checked before any work starts.

Every knob of the pipeline lives in params.yaml; each stage reads it through `load_params`, which fails
fast with the key, the value given and what is allowed (a typo'd tokenizer kind, a negative vocabulary,
attention heads that do not divide the hidden size, ...).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

CLEAN_STEPS = ("strip_markup", "unescape_entities", "lowercase", "remove_punctuation", "normalize_whitespace")
TOKENIZER_KINDS = ("word", "bpe", "wordpiece", "char")
MODEL_NAMES = ("gru", "gru_attention")  # the default `train.models`: the models a run trains and reports
BASELINE_NAMES = ("tfidf_lr", "nbsvm")  # the default `baseline.models`: every linear bar a run fits
ENSEMBLE = "ensemble"  # the averaged model (flows/ensemble.py), a model name like the others


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetParams(_Strict):
    name: str = "imdb"
    val_fraction: float = Field(0.1, gt=0, lt=1)
    limit: int = Field(0, ge=0, description="keep at most this many rows per split (seeded); 0 = all")
    train_limit: int = Field(0, ge=0, description=(
        "labelled training rows kept (seeded, stratified by label) before the validation split is carved from "
        "them, e.g. 1000 = 900 train + 100 val; test and unsup untouched; 0 = all"))
    dedupe: Literal["none", "drop_overlap", "drop_all"] = Field("none", description=(
        "texts equal after clean.steps in two splits: none = warn only; drop_overlap = drop the test and val copies of "
        "train texts and the val copies of test texts; drop_all = also later copies within a split (adapters/hygiene.py)"))
    normalize_labels: bool = Field(False, description=(
        "merge labels equal up to case and surrounding whitespace ('pos', 'Pos ') into the declared label, else the "
        "most frequent spelling, stripped; before the declared labels are checked"))
    min_class_rows: int = Field(10, ge=0, description="warn when a class has fewer rows in train, val or test; 0 = off")
    validate_rows: int = Field(100_000, ge=1, description=(
        "GX validates tables up to this many rows whole; a larger one on a seeded sample of this many plus every row a "
        "check flags, the counts exact over all rows (adapters/sampled.py): what GX holds in memory"))
    options: dict[str, Any] = Field(default_factory=dict)


class CleanParams(_Strict):
    steps: list[Literal[CLEAN_STEPS]] = Field(default_factory=lambda: list(CLEAN_STEPS))  # type: ignore[valid-type]


class EngineParams(_Strict):
    """Where clean and tokenize process their batches (flows/shards.py)."""
    kind: Literal["local", "dask"] = Field("local", description=(
        "local: this process, a batch at a time; dask: each batch a Prefect task on a Dask cluster (prefect-dask)"))
    workers: int = Field(2, ge=1, description="dask without an address: worker processes of the LocalCluster started for the stage")
    address: str = Field("", description="dask: a running scheduler, e.g. tcp://10.0.0.5:8786 ('' starts a LocalCluster)")


class TokenizeParams(_Strict):
    kind: Literal[TOKENIZER_KINDS] = "bpe"  # type: ignore[valid-type]
    vocab_size: int = Field(20000, gt=2)
    min_frequency: int = Field(2, ge=1)
    max_length: int = Field(256, ge=1)
    truncation: Literal["head", "tail", "head_tail"] = Field(
        "head_tail", description="which max_length tokens of a longer document are kept: first, last, or both ends")
    head_share: float = Field(0.5, ge=0, le=1, description="head_tail: the share of max_length taken from the start")
    chunk_size: int = Field(2000, ge=1, description="documents encoded per batch (bounds peak memory)")


class PretrainParams(_Strict):
    """The pretrain stage: token embeddings from the train split's text plus unsup (never val or test)."""

    dim: int = Field(64, ge=2, description="embedding width; models with init: pretrained must use the same embedding_dim")
    window: int = Field(5, ge=1, description="tokens either side that count as context")
    smoothing: float = Field(0.75, gt=0, le=1, description="context-distribution smoothing of PMI (word2vec's 0.75)")
    max_length: int = Field(0, ge=0, description="tokens read per document; 0 = whole documents")
    encoder_epochs: int = Field(0, ge=0, description="language-model epochs of the GRU encoder; 0 = embeddings only")
    hidden_size: int = Field(64, ge=1, description="the pretrained encoder's GRU width per direction = model.<name>.hidden_size")
    lr: float = Field(3e-3, gt=0, description="the language model's peak learning rate (AdamW, linear decay)")
    negatives: int = Field(128, ge=1, description="sampled-softmax negatives per batch")
    batch_size: int = Field(64, ge=1)
    lm_max_length: int = Field(0, ge=0, description=(
        "tokens of each document the language model reads, cut as tokenize.truncation cuts (at most "
        "tokenize.max_length); 0 = tokenize.max_length"))


class TrainParams(_Strict):
    models: list[str] = Field(default_factory=lambda: list(MODEL_NAMES), min_length=1, description=(
        "the neural models this run trains (one train@<name> stage each) and the report compares with the baseline; "
        "each needs a model.<name> section (models/registry.py MODELS)"))
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(5, ge=1)
    lr: float = Field(2e-3, gt=0)
    lr_schedule: Literal["plateau", "constant", "linear"] = Field(
        "plateau", description="plateau: x lr_decay after each epoch without improvement; linear: to 0 by the last epoch")
    lr_decay: float = Field(0.5, gt=0, le=1, description="the plateau schedule's factor")
    weight_decay: float = Field(0.01, ge=0)
    patience: int = Field(2, ge=1, description="epochs without validation improvement before stopping")
    grad_clip: float = Field(1.0, gt=0)
    bucketing: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = Field(0, ge=0, description="torch CPU threads; 0 = all cores")
    resume: bool = False
    label_limit: int = Field(0, ge=0, description=(
        "at most this many labelled rows (train + val together, each cut in proportion, seeded and stratified) that "
        "the models and baselines learn from; test, the tokenizer and pretraining keep all. 0 = all. A learning "
        "curve's knob (reweigh scaling)"))

    @field_validator("models")
    @classmethod
    def _known_models(cls, names: list[str]) -> list[str]:
        known = list(ModelParams.model_fields)  # one model.<name> section per model of the registry (models.registry.MODELS)
        unknown = [n for n in names if n not in known]
        if unknown:
            hint = ("; baselines have their own list, baseline.models" if set(unknown) & {"baseline", *BASELINE_NAMES}
                    else "; the ensemble is its own stage (params ensemble.*)" if ENSEMBLE in unknown else "")
            raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))}: choose from {', '.join(known)}{hint}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"model(s) named twice: {', '.join(repeated)}")
        return names

    def loop_fields(self) -> dict[str, Any]:
        """The knobs of the training loop (models/train_loop.py LoopConfig): all but which models run."""
        return self.model_dump(exclude={"models", "label_limit"})


ADVERSARIAL = ("adversarial training on the token embeddings (Miyato et al. 2017): each review's perturbation, in "
               "average word-vector lengths; 0 = off. Doubles a training step's cost")


class GRUParams(_Strict):
    init: Literal["pretrained", "random"] = Field("pretrained", description="embedding from the pretrain stage, or random")
    embedding_lr_scale: float = Field(1.0, ge=0, description="the embedding's learning rate = train.lr x this; 0 freezes it")
    adversarial: float = Field(0.0, ge=0, description=ADVERSARIAL)
    embedding_dim: int = Field(128, ge=1)
    hidden_size: int = Field(128, ge=1)
    num_layers: int = Field(1, ge=1)
    bidirectional: bool = True
    dropout: float = Field(0.3, ge=0, lt=1)
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description="share of token vectors dropped while training")
    pooling: Literal["last", "mean", "max"] = "mean"
    packed: bool = Field(False, description="packed sequences; false: the equivalent, faster reversal route (models/gru.py)")


class AttentionGRUParams(GRUParams):
    heads: int = Field(4, ge=1)
    positional_encoding: bool = False
    attention_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on attention weights; > 0 is ~6x slower on CPU")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "AttentionGRUParams":
        width = self.hidden_size * (2 if self.bidirectional else 1)
        if width % self.heads:
            raise ValueError(
                f"heads={self.heads} must divide the GRU output width {width} "
                f"(hidden_size {self.hidden_size} x {'2 directions' if self.bidirectional else '1 direction'})"
            )
        return self


class CNNParams(_Strict):
    """A Kim-style text CNN (models/cnn.py); trained when train.models lists it (or: python -m flows.train cnn)."""
    init: Literal["pretrained", "random"] = Field("pretrained", description="embedding from the pretrain stage, or random")
    embedding_lr_scale: float = Field(1.0, ge=0, description="the embedding's learning rate = train.lr x this; 0 freezes it")
    adversarial: float = Field(0.0, ge=0, description=ADVERSARIAL)
    embedding_dim: int = Field(64, ge=1)
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description="share of token vectors dropped while training")
    widths: list[int] = Field(default_factory=lambda: [3, 4, 5], min_length=1, description="kernel widths, one convolution each")
    filters: int = Field(100, ge=1, description="filters per kernel width")
    dropout: float = Field(0.5, ge=0, lt=1)

    @model_validator(mode="after")
    def _widths_positive(self) -> "CNNParams":
        if min(self.widths) < 1:
            raise ValueError(f"widths {self.widths}: every kernel width must be >= 1")
        return self


class TransformerParams(_Strict):
    """A small encoder-only Transformer (models/transformer.py); trained when train.models lists it."""
    init: Literal["pretrained", "random"] = Field("pretrained", description="embedding from the pretrain stage, or random")
    embedding_lr_scale: float = Field(1.0, ge=0, description="the embedding's learning rate = train.lr x this; 0 freezes it")
    adversarial: float = Field(0.0, ge=0, description=ADVERSARIAL)
    embedding_dim: int = Field(64, ge=1, description="also the model width D; heads must divide it")
    embedding_dropout: float = Field(0.0, ge=0, lt=1, description="share of token vectors dropped while training")
    layers: int = Field(2, ge=1)
    heads: int = Field(4, ge=1)
    ff: int = Field(128, ge=1, description="hidden width of each block's MLP")
    dropout: float = Field(0.1, ge=0, lt=1)
    positional_encoding: Literal["sinusoidal", "learned", "none"] = "sinusoidal"
    max_len: int = Field(512, ge=1, description="longest review the positions cover; must be >= tokenize.max_length")
    pooling: Literal["mean", "attention"] = "mean"
    scale: bool = Field(True, description="divide attention scores by sqrt(head width); false only for the ablation")
    mask_padding: bool = Field(True, description="mask padded keys; false only to show that padding then changes predictions")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> "TransformerParams":
        if self.embedding_dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide the model width embedding_dim {self.embedding_dim}")
        return self


class ModelParams(_Strict):
    gru: GRUParams = GRUParams()
    gru_attention: AttentionGRUParams = AttentionGRUParams()
    cnn: CNNParams = CNNParams()  # not in the default train.models: trained when listed there (or named)
    transformer: TransformerParams = TransformerParams()


class TfidfLRParams(_Strict):
    """TF-IDF of n-grams (sublinear tf) + logistic regression (models/baselines.py tfidf_lr)."""
    ngram_max: int = Field(2, ge=1, le=3, description="n-grams of 1 to this many words")
    min_df: int = Field(2, ge=1, description="an n-gram must occur in this many training documents")
    max_features: int = Field(200000, ge=1, description="keep the most frequent n-grams only")
    C: float = Field(4.0, gt=0, description="inverse L2 regularisation strength")


class NBSVMParams(_Strict):
    """Wang & Manning's NB-SVM (models/baselines.py nbsvm): binarised n-gram counts scaled by their naive-Bayes
    log-count ratio r, then logistic regression (liblinear); one-vs-rest beyond two classes."""
    ngram_max: int = Field(2, ge=1, le=3, description="n-grams of 1 to this many words (the paper's best: 2)")
    min_df: int = Field(1, ge=1, description="an n-gram must occur in this many training documents; 1 = every n-gram, as the paper")
    max_features: int = Field(0, ge=0, description="keep the most frequent n-grams only; 0 = all")
    alpha: float = Field(1.0, gt=0, description="smoothing added to each feature's count per class before r is taken")
    C: float = Field(1.0, gt=0, description="inverse L2 regularisation strength of the logistic regression")
    beta: float = Field(1.0, gt=0, le=1, description=(
        "interpolation w' = (1 - beta) mean|w| + beta w; 1 = none (the paper's SVM variant used 0.25)"))


class BaselineParams(_Strict):
    models: list[str] = Field(default_factory=lambda: list(BASELINE_NAMES), min_length=1, description=(
        "the linear bars this run fits (one baseline@<name> stage each), each configured by baseline.<name>"))
    tfidf_lr: TfidfLRParams = TfidfLRParams()
    nbsvm: NBSVMParams = NBSVMParams()

    @model_validator(mode="before")
    @classmethod
    def _knobs_moved(cls, data: Any) -> Any:
        moved = sorted(set(data) & set(TfidfLRParams.model_fields)) if isinstance(data, dict) else []
        if moved:
            raise ValueError(f"{', '.join(moved)}: the TF-IDF baseline's knobs live under baseline.tfidf_lr now "
                             "(baseline.models lists the baselines, baseline.<name> configures each)")
        return data

    @field_validator("models")
    @classmethod
    def _known_baselines(cls, names: list[str]) -> list[str]:
        known = [k for k in cls.model_fields if k != "models"]
        unknown = [n for n in names if n not in known]
        if unknown:
            hint = "; neural models go in train.models" if set(unknown) & set(ModelParams.model_fields) else ""
            raise ValueError(f"unknown baseline(s) {', '.join(map(repr, unknown))}: choose from {', '.join(known)}{hint}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"baseline(s) named twice: {', '.join(repeated)}")
        return names


class EnsembleParams(_Strict):
    """The ensemble stage (flows/ensemble.py): the average of its members' class probabilities."""
    enabled: bool = Field(True, description="false: the stage writes an empty marker and the report leaves the ensemble out")
    members: Literal["all"] | list[str] = Field("all", description=(
        "all = every model of train.models and baseline.models; or a list of them; [] = no ensemble"))
    weights: Literal["uniform", "val"] = Field("uniform", description=(
        "uniform = the plain mean; val = weights on the simplex minimising validation log-loss"))

    @field_validator("members")
    @classmethod
    def _known_members(cls, members: str | list[str]) -> str | list[str]:
        if isinstance(members, str):
            return members
        known = [*ModelParams.model_fields, *(k for k in BaselineParams.model_fields if k != "models")]
        unknown = [n for n in members if n not in known]
        if unknown:
            raise ValueError(f"unknown model(s) {', '.join(map(repr, unknown))}: choose from {', '.join(known)}, or write all")
        repeated = sorted({n for n in members if members.count(n) > 1})
        if repeated:
            raise ValueError(f"member(s) named twice: {', '.join(repeated)}")
        if len(members) == 1:
            raise ValueError(f"one member ({members[0]}) is no ensemble: list two or more, all, or [] for none")
        return members


class ReportParams(_Strict):
    target_precision: float = Field(0.9, gt=0, lt=1, description="the lowest threshold reaching it is chosen on validation, reported on test")
    target_recall: float = Field(0.9, gt=0, lt=1, description="the highest threshold reaching it is chosen on validation, reported on test")
    significance: float = Field(0.05, gt=0, le=0.2, description=(
        "a difference between two models is called significant when McNemar's p is below this (and its bootstrap "
        "interval excludes 0); confidence intervals cover 1 - this (0.05: 95%)"))
    bootstrap_samples: int = Field(1000, ge=100, le=100000, description="paired bootstrap resamples of the test rows (seeded by `seed`)")
    attention_examples: int = Field(3, ge=0)
    probe_tokens: list[str] = Field(default_factory=list, description="tokens whose nearest neighbours the report shows; [] = each class's 3 strongest cues")
    projection_tokens: int = Field(300, ge=2, description="most frequent training tokens drawn in the embedding-space figure")


DRIFT_CHECKS = ("label_shift", "length_shift", "unknown_tokens", "duplicates", "label_conflicts")


class DriftParams(_Strict):
    """Drift between the champion's data and the new data, checked before a challenger trains
    (flows/retrain/drift.py). Each check warns; those listed in `block` stop the retrain instead."""

    label_shift: float = Field(0.05, ge=0, le=1, description=(
        "the largest change in any label's share of the labelled rows (L-infinity distance), champion's data → new data"))
    length_shift: float = Field(0.5, ge=0, description=(
        "the new rows' token counts at the 10th, 50th and 90th percentile may lie within the old rows' / (1 + this) "
        "and x (1 + this)"))
    unknown_tokens: float = Field(0.05, ge=0, le=1, description=(
        "how much the share of tokens the champion's tokenizer does not know may rise in the new rows"))
    duplicates: float = Field(0.5, ge=0, le=1, description=(
        "the share of new rows that copy, or nearly copy, an old row with the same label"))
    label_conflicts: float = Field(0.0, ge=0, le=1, description=(
        "the share of new rows whose text, or a near copy of it, is in the old data with another label"))
    near_duplicate: float = Field(0.8, gt=0, le=1, description=(
        "the Jaccard similarity of two texts' word trigrams (after clean.steps) from which they count as near copies"))
    block: list[Literal["label_shift", "length_shift", "unknown_tokens", "duplicates", "label_conflicts"]] = Field(
        default_factory=list, description="checks whose failure stops the retrain before training; the rest warn")


class RetrainParams(_Strict):
    """The scheduled retraining deployment (`reweigh serve`, `reweigh deploy`; flows/retrain/flow.py)."""

    deployment: str = Field("scheduled", min_length=1, description="deployment name: retrain/<deployment>")
    cron: str = Field("0 3 * * *", description="when the scheduled retrain runs (5-field cron)")
    timezone: str = "UTC"
    pull: bool = Field(False, description="dvc pull before reproducing")
    push: bool = Field(True, description="dvc push after a successful run")
    remote: str | None = Field(None, description="DVC remote for pull/push; null = the default remote")
    lock_timeout: float = Field(600, ge=0, description="seconds a retrain waits for another one in the same workspace")
    promote: Literal["always", "if_not_worse"] = Field(
        "if_not_worse", description="when the challenger replaces the champion (docs/retraining.md)")
    promote_metric: Literal["accuracy", "macro_f1"] = Field(
        "macro_f1", description="judged on the best neural model of each side, on the new test split and the reference set")
    tolerance: float = Field(0.005, ge=0, le=1, description="how much worse (in promote_metric) a challenger may be and still be promoted")
    significance: float = Field(0.05, ge=0, le=1, description=(
        "a challenger whose best model is worse on a judged set with McNemar p below this is not promoted, "
        "even within the tolerance; 0 = the tolerance alone decides"))
    reference: str | None = Field(None, description=(
        "a labelled file (csv, tsv, parquet, jsonl with text and label columns) the challenger must not do worse on; "
        "null = the champion's own test split"))
    drift: DriftParams = Field(default_factory=DriftParams)
    version: bool = Field(True, description=(
        "commit each promotion (dvc.lock, params.yaml, reports/) and register it as a GTO version, the champion stage"))

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, cron: str) -> str:
        problem = _prefect_schedule_problem(cron=cron)
        if problem:
            raise ValueError(f"{problem}. A cron has 5 fields: minute (0-59) hour (0-23) day-of-month (1-31) month (1-12) "
                             f"day-of-week (0-6), e.g. '0 3 * * *'")
        return cron

    @field_validator("timezone")
    @classmethod
    def _timezone_is_valid(cls, timezone: str) -> str:
        problem = _prefect_schedule_problem(timezone=timezone)
        if problem:
            raise ValueError(problem)
        return timezone


def _prefect_schedule_problem(cron: str = "0 3 * * *", timezone: str = "UTC") -> str | None:
    """What Prefect's own CronSchedule (the schedule `reweigh serve` makes) says is wrong, or None."""
    from prefect.client.schemas.schedules import CronSchedule

    try:
        CronSchedule(cron=cron, timezone=timezone)
    except ValidationError as exc:
        return "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
    return None


class ServeParams(_Strict):
    """The HTTP service (`reweigh serve-model`, flows/service.py); no stage depends on it."""

    model: str = Field("best", description=(
        "the model served: best (the highest validation accuracy in reports/metrics.json), a neural model, a baseline or ensemble"))
    host: str = Field("127.0.0.1", min_length=1, description="the address to bind: 127.0.0.1 serves this machine only; 0.0.0.0 every interface")
    port: int = Field(8000, ge=0, le=65535)
    max_texts: int = Field(256, ge=1, description="texts one request may hold")
    max_chars: int = Field(100_000, ge=1, description="characters one text may hold")
    max_request_mb: float = Field(16, gt=0, description="the largest request body, in MB")
    batch_size: int = Field(64, ge=1, description="texts scored in one forward pass: concurrent requests are scored together up to this")
    threads: int = Field(1, ge=0, description=(
        "torch threads scoring requests; 0 = all cores. 1: a second thread gains a small batch nothing and contends "
        "with the server's event loop (GRU + attention on IMDB, 8 clients: p99 64 ms with 1, 117 ms with 2)"))
    reload_settle: float = Field(1.0, ge=0, description=(
        "seconds the model's files must stay unchanged before the service loads a new version of them"))

    @field_validator("model")
    @classmethod
    def _model_is_known(cls, model: str) -> str:
        known = ("best", *ModelParams.model_fields, *(b for b in BaselineParams.model_fields if b != "models"), ENSEMBLE)
        if model not in known:
            raise ValueError(f"unknown model {model!r}: choose from {', '.join(known)}")
        return model


class ScalingParams(_Strict):
    """Learning and size curves (`reweigh scaling`, flows/scaling/): DVC experiments over train.label_limit and
    model widths; no stage depends on it."""

    min_labels: int = Field(250, ge=2, description=(
        "the smallest labelled size of the grid (train + val rows); raised to what leaves every class a row of each"))
    points: int = Field(6, ge=2, description="labelled sizes from min_labels to all, evenly spaced on a log scale; the largest is the main run")
    widths: list[float] = Field(default_factory=list, description=(
        "width multipliers at full size (e.g. [0.5, 2]): every model's embedding / hidden / filter / feed-forward "
        "widths times this, pretraining matched; [] = none (each point retrains everything at full size)"))
    targets: list[float] = Field(default_factory=lambda: [0.9, 0.75], description=(
        "the labels needed for these fractions of the best model's error at full size, from each fitted curve"))
    jobs: int = Field(1, ge=1, description="experiments run at once (dvc queue start --jobs)")

    @field_validator("widths")
    @classmethod
    def _positive(cls, widths: list[float]) -> list[float]:
        if any(w <= 0 for w in widths):
            raise ValueError(f"widths must be positive multipliers, got {widths}")
        return widths

    @field_validator("targets")
    @classmethod
    def _fractions(cls, targets: list[float]) -> list[float]:
        if any(not 0 < t < 1 for t in targets):
            raise ValueError(f"targets are fractions of today's error, between 0 and 1; got {targets}")
        return targets


class Params(_Strict):
    seed: int = 42
    dataset: DatasetParams = DatasetParams()
    clean: CleanParams = CleanParams()
    engine: EngineParams = EngineParams()
    tokenize: TokenizeParams = TokenizeParams()
    pretrain: PretrainParams = PretrainParams()
    train: TrainParams = TrainParams()
    model: ModelParams = ModelParams()
    baseline: BaselineParams = BaselineParams()
    ensemble: EnsembleParams = EnsembleParams()
    report: ReportParams = ReportParams()
    retrain: RetrainParams = RetrainParams()
    serve: ServeParams = ServeParams()
    scaling: ScalingParams = ScalingParams()

    @model_validator(mode="after")
    def _transformer_covers_reviews(self) -> "Params":
        t = self.model.transformer
        if "transformer" in self.train.models and t.max_len < self.tokenize.max_length:
            raise ValueError(f"model.transformer.max_len {t.max_len} is below tokenize.max_length {self.tokenize.max_length}: "
                             "the Transformer (in train.models) would meet reviews longer than its positions cover")
        return self

    @model_validator(mode="after")
    def _members_are_trained(self) -> "Params":
        members = self.ensemble.members
        missing = [] if members == "all" else [m for m in members if m not in (*self.train.models, *self.baseline.models)]
        if missing:
            raise ValueError(f"ensemble.members names {', '.join(missing)}, which this run does not train: add it to "
                             "train.models or baseline.models, or leave it out of the ensemble")
        return self

    def ensemble_members(self) -> list[str]:
        """The models the ensemble averages, in report order; [] when there is no ensemble."""
        if not self.ensemble.enabled:
            return []
        if self.ensemble.members == "all":
            return [*self.train.models, *self.baseline.models]
        return [m for m in (*self.train.models, *self.baseline.models) if m in self.ensemble.members]

    def model_set(self) -> tuple[str, ...]:
        """Every model of this run, in the order tables show them: neural, baselines, then the ensemble."""
        return (*self.train.models, *self.baseline.models, *((ENSEMBLE,) if self.ensemble_members() else ()))


class ParamsError(ValueError):
    """params.yaml has a value the pipeline cannot use."""


def load_params(path: str | Path = "params.yaml") -> Params:
    return validate_params(load_raw_params(path), path)


def load_raw_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    """params.yaml as YAML, not yet validated (to apply overrides to first)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found (run from the project root, where dvc.yaml is)")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of keys (seed, dataset, clean, ...), got a {type(raw).__name__}")
    return raw


def validate_params(raw: dict[str, Any], path: str | Path = "params.yaml") -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise ParamsError(format_errors(Path(path), exc)) from None


def parse_assignments(items: Iterable[str], flag: str = "--set", example: str = "-S tokenize.vocab_size=8000") -> dict[str, Any]:
    """`KEY=VALUE` strings (as `dvc exp run -S` takes them) → {key: value read as YAML}: 8000 an int, [a, b] a list."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"{flag} {item!r}: write KEY=VALUE, e.g. {example}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ParamsError(f"{flag} {item!r}: the value is not valid YAML: {exc}") from None
    return out


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any], known: bool = False) -> dict[str, Any]:
    """A copy of `raw` (params as YAML) with each dotted key (`train.lr`) set to its value; the original is
    untouched. known=True: only keys that exist already. Validate the result with validate_params."""
    out = copy.deepcopy(raw)
    for key, value in overrides.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {}) if not known else node.get(part)
            if not isinstance(node, dict):
                raise ParamsError(f"override '{key}': '{part}' is not a section of params.yaml")
        if known and leaf not in node:
            raise ParamsError(f"override '{key}': params.yaml has no {key}")
        node[leaf] = value
    return out


def format_errors(path: Path, exc: ValidationError) -> str:
    lines = [f"{path}: {exc.error_count()} invalid value(s):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        given = err.get("input")
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        lines.append(f"  {key}: {msg}; got {given!r}" if err["type"] != "missing" else f"  {key}: {msg}")
    return "\n".join(lines)


def role(name: str) -> str:
    """What kind of model `name` is: "neural" (a model.<name> section), "baseline" (a baseline.<name> section)
    or "ensemble"; "unknown" otherwise."""
    if name == ENSEMBLE:
        return "ensemble"
    if name in ModelParams.model_fields:
        return "neural"
    return "baseline" if name in BaselineParams.model_fields and name != "models" else "unknown"
