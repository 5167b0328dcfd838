"""``OnnxRiskModel``: the two ONNX graphs of an artifact behind one small adapter.

Providers are always passed explicitly, in the configured order filtered by what this
build of ONNX Runtime has (``get_available_providers()`` lists what was compiled in,
not what will run), and ``session.get_providers()`` is logged: that is what runs.
Graph inputs/outputs are checked against the artifact's feature spec at load, and the
sessions are warmed up over every length bucket before ``ready`` turns true, so the
first real request does not pay for lazy initialization.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from features.entity_profile import N_ENTITY
from features.featurize import N_NUMERIC, FeatureBatch
from features.tree_inputs import AGGREGATES, tree_inputs, tree_width
from scoring.artifact import ModelArtifact
from scoring.errors import ModelLoadError
from scoring.incremental_state import StateLayout, rebuild, rebuild_whole
from scoring.metrics import NONFINITE_FALLBACKS
from scoring.served_decision import Combination, tree_logit

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
ENCODER_INPUTS = {
    "hist_num": ("tensor(float)", 3),
    "hist_mcc": ("tensor(int64)", 2),
    "hist_channel": ("tensor(int64)", 2),
    "hist_pad": ("tensor(bool)", 2),
    "hist_len": ("tensor(int64)", 1),
}
HEAD_INPUTS = {
    "history_embedding": ("tensor(float)", 2),
    "cur_num": ("tensor(float)", 2),
    "cur_mcc": ("tensor(int64)", 1),
    "cur_channel": ("tensor(int64)", 1),
}
#: the incremental architecture's step graph (``models.export_incremental``)
STEP_INPUTS = {
    "ctx_num": ("tensor(float)", 3),
    "ctx_mcc": ("tensor(int64)", 2),
    "ctx_channel": ("tensor(int64)", 2),
    "ctx_pad": ("tensor(bool)", 2),
    "state_h": ("tensor(float)", 2),
    "state_c": ("tensor(float)", 2),
}
STEP_OUTPUTS = ["next_h", "next_c", "next_embedding", "history_embedding"]
#: its whole-window rebuild graph (optional)
REBUILD_INPUTS = {
    "hist_num": ("tensor(float)", 3),
    "hist_mcc": ("tensor(int64)", 2),
    "hist_channel": ("tensor(int64)", 2),
}
REBUILD_OUTPUTS = ["next_h", "next_c", "next_embedding"]
#: the head of an artifact trained with merchant/device profiles has this input too
ENTITY_INPUT = {"cur_entity": ("tensor(float)", 2)}
#: the tree part of the served decision (``features.tree_inputs``)
TREE_INPUT = "tree_features"
TREE_OUTPUT = "probabilities"
#: the parts' names, as ``evaluate`` reports them
SEQUENCE_PART, TREE_PART = "transformer_lstm", "baseline"


@dataclass(frozen=True)
class OnnxModelConfig:
    """How to run the graphs."""

    providers: tuple[str, ...] = DEFAULT_PROVIDERS
    intra_op_threads: int = 0  # 0 = ONNX Runtime decides
    fallback_score: float = 1.0  # fail closed: an unscorable event goes to review
    warmup_batch: int = 8
    #: "auto": IO binding when a GPU provider runs (inputs copied once, outputs bound on
    #: the device); "always" also on CPU (tests prove it equals plain ``run``)
    io_binding: str = "auto"
    #: ORT's pool threads busy-wait for work by default. In a worker that shares a few
    #: cores with its consumer, producer and event loop, that burned CPU the rest of the
    #: worker needed (docs/BENCHMARKS.md). Worth turning on only on a dedicated scorer.
    allow_spinning: bool = False


@dataclass
class OnnxRiskModel:
    """A loaded, verified, warmed-up model."""

    artifact: ModelArtifact
    config: OnnxModelConfig = field(default_factory=OnnxModelConfig)
    encoder: ort.InferenceSession | None = field(default=None, init=False)
    head: ort.InferenceSession | None = field(default=None, init=False)
    #: the tree part, when the artifact has one (always on ORT's CPU provider: the
    #: ai.onnx.ml tree operators have no GPU kernels)
    tree: ort.InferenceSession | None = field(default=None, init=False)
    #: the incremental model's rebuild graph, when the artifact has one (a miss is then
    #: one call per distinct window length instead of one per stored event)
    rebuild_graph: ort.InferenceSession | None = field(default=None, init=False)
    ready: bool = field(default=False, init=False)
    io_bound: bool = field(default=False, init=False)
    on_gpu: bool = field(default=False, init=False)
    #: the embedding of an empty history (a new card holder): only the learned [USER]
    #: token is unmasked, so it is one constant per model, computed once at load
    empty_history_embedding: np.ndarray | None = field(default=None, init=False, repr=False)

    @property
    def version(self) -> str:
        return self.artifact.version

    @property
    def combination(self) -> Combination:
        """The artifact's served decision (``scoring.served_decision``)."""
        return self.artifact.combination

    def providers(self) -> list[str]:
        """The providers actually running (empty before ``load``)."""
        return list(self.encoder.get_providers()) if self.encoder else []

    def load(self) -> OnnxRiskModel:
        """Create sessions, check wiring, warm up. Idempotent."""
        if self.ready:
            return self
        available = set(ort.get_available_providers())
        wanted = [p for p in self.config.providers if p in available] or ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.config.intra_op_threads:
            opts.intra_op_num_threads = self.config.intra_op_threads
        if not self.config.allow_spinning:
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            opts.add_session_config_entry("session.inter_op.allow_spinning", "0")
        self.encoder = ort.InferenceSession(str(self.artifact.encoder_path), opts, providers=wanted)
        self.head = ort.InferenceSession(str(self.artifact.head_path), opts, providers=wanted)
        log.info("model %s running on %s", self.version, self.encoder.get_providers())
        gpu = any(
            p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
            for p in self.encoder.get_providers()
        )
        self.on_gpu = gpu
        self.io_bound = self.config.io_binding == "always" or (
            self.config.io_binding == "auto" and gpu
        )
        if self.artifact.incremental:
            self._check(self.encoder, STEP_INPUTS, STEP_OUTPUTS, "step")
            if self.artifact.rebuild_path is not None:
                self.rebuild_graph = ort.InferenceSession(
                    str(self.artifact.rebuild_path), opts, providers=wanted
                )
                self._check(self.rebuild_graph, REBUILD_INPUTS, REBUILD_OUTPUTS, "rebuild")
        else:
            self._check(self.encoder, ENCODER_INPUTS, ["history_embedding"], "encoder")
        head_inputs = {**HEAD_INPUTS, **(ENTITY_INPUT if self.artifact.spec.entity else {})}
        self._check(self.head, head_inputs, ["logit"], "head")
        tree_path = self.artifact.tree_path
        if tree_path is not None:
            self.tree = ort.InferenceSession(
                str(tree_path), opts, providers=["CPUExecutionProvider"]
            )
            self._check_tree(self.tree)
        if self.artifact.incremental:
            self.empty_history_embedding = self._step_outputs(self.state_layout.empty(1), 1)[3][0]
        else:
            self.empty_history_embedding = self.encode(_synthetic_batch(np.zeros(1, np.int64), 1))[
                0
            ]
        self._warm_up()
        self.ready = True
        return self

    def _check(
        self,
        sess: ort.InferenceSession,
        inputs: dict[str, tuple[str, int]],
        expected: list[str],
        what: str,
    ) -> None:
        got = {i.name: i for i in sess.get_inputs()}
        if set(got) != set(inputs):
            raise ModelLoadError(
                f"{what} graph inputs are {sorted(got)}, expected {sorted(inputs)}"
            )
        for name, (dtype, rank) in inputs.items():
            meta = got[name]
            if meta.type != dtype or len(meta.shape) != rank:
                raise ModelLoadError(
                    f"{what} input {name}: {meta.type} rank {len(meta.shape)}, "
                    f"expected {dtype} rank {rank}"
                )
            width = N_ENTITY if name == "cur_entity" else N_NUMERIC
            if name.startswith("state_") and meta.shape[-1] != self.artifact.hidden:
                raise ModelLoadError(
                    f"{what} input {name} has width {meta.shape[-1]}, the network "
                    f"{self.artifact.hidden}"
                )
            if name.startswith("ctx_") and meta.shape[1] != self.artifact.context:
                raise ModelLoadError(
                    f"{what} input {name} reads {meta.shape[1]} events, the manifest says "
                    f"{self.artifact.context}"
                )
            if (name.endswith("_num") or name == "cur_entity") and meta.shape[-1] != width:
                raise ModelLoadError(
                    f"{what} input {name} has {meta.shape[-1]} features, the spec has {width}"
                )
        outputs = [o.name for o in sess.get_outputs()]
        if outputs != expected:
            raise ModelLoadError(f"{what} graph outputs are {outputs}, expected {expected}")

    def _check_tree(self, sess: ort.InferenceSession) -> None:
        got = sess.get_inputs()
        width = tree_width(self.artifact.spec.entity)
        if [i.name for i in got] != [TREE_INPUT] or got[0].type != "tensor(float)":
            raise ModelLoadError(
                f"tree graph inputs are {[(i.name, i.type) for i in got]}, expected "
                f"[{TREE_INPUT!r} float]"
            )
        if len(got[0].shape) != 2 or got[0].shape[-1] != width:
            raise ModelLoadError(
                f"tree input has shape {got[0].shape}, the spec has {width} features"
            )
        if TREE_OUTPUT not in [o.name for o in sess.get_outputs()]:
            raise ModelLoadError(f"tree graph has no {TREE_OUTPUT!r} output")

    @property
    def state_layout(self) -> StateLayout:
        """The per-card state of an incremental artifact (``scoring.incremental_state``)."""
        return StateLayout(self.artifact.hidden, self.artifact.context, N_NUMERIC)

    def step(
        self,
        ctx_num: np.ndarray,
        ctx_mcc: np.ndarray,
        ctx_channel: np.ndarray,
        ctx_pad: np.ndarray,
        state_h: np.ndarray,
        state_c: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One event per card (incremental artifacts): next ``h``, ``c`` and embedding."""
        if self.encoder is None or not self.artifact.incremental:
            raise ModelLoadError(f"model {self.version} has no step graph")
        feeds = {
            "ctx_num": np.ascontiguousarray(ctx_num, dtype=np.float32),
            "ctx_mcc": np.ascontiguousarray(ctx_mcc, dtype=np.int64),
            "ctx_channel": np.ascontiguousarray(ctx_channel, dtype=np.int64),
            "ctx_pad": np.ascontiguousarray(ctx_pad, dtype=bool),
            "state_h": np.ascontiguousarray(state_h, dtype=np.float32),
            "state_c": np.ascontiguousarray(state_c, dtype=np.float32),
        }
        h, c, emb, _ = self.encoder.run(STEP_OUTPUTS, feeds)
        return np.asarray(h), np.asarray(c), np.asarray(emb, dtype=np.float32)

    def whole(
        self, hist_num: np.ndarray, hist_mcc: np.ndarray, hist_channel: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The state and embedding after equal-length windows, in one call of the rebuild
        graph (artifacts that have one)."""
        if self.rebuild_graph is None:
            raise ModelLoadError(f"model {self.version} has no rebuild graph")
        feeds = {
            "hist_num": np.ascontiguousarray(hist_num, dtype=np.float32),
            "hist_mcc": np.ascontiguousarray(hist_mcc, dtype=np.int64),
            "hist_channel": np.ascontiguousarray(hist_channel, dtype=np.int64),
        }
        h, c, emb = self.rebuild_graph.run(REBUILD_OUTPUTS, feeds)
        return np.asarray(h), np.asarray(c), np.asarray(emb, dtype=np.float32)

    def rebuild_states(
        self,
        hist_num: np.ndarray,
        hist_mcc: np.ndarray,
        hist_channel: np.ndarray,
        hist_len: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """States and embeddings rebuilt from windows (step features, right-padded): by
        the rebuild graph where the artifact has one, else one step per position."""
        if self.empty_history_embedding is None:
            raise ModelLoadError("model not loaded")
        history = (hist_num, hist_mcc, hist_channel, hist_len)
        if self.rebuild_graph is not None:
            return rebuild_whole(
                self.whole, self.state_layout, self.empty_history_embedding, *history
            )
        return rebuild(self.step, self.state_layout, self.empty_history_embedding, *history)

    def _step_outputs(self, states: np.ndarray, b: int) -> list[np.ndarray]:
        """All step outputs for ``states`` and a zero event (load and warm-up)."""
        lay = self.state_layout
        h, c, *_ = lay.unpack(states)
        if self.encoder is None:
            raise ModelLoadError("model not loaded")
        feeds = {
            "ctx_num": np.zeros((b, lay.context, N_NUMERIC), np.float32),
            "ctx_mcc": np.ones((b, lay.context), np.int64),
            "ctx_channel": np.ones((b, lay.context), np.int64),
            "ctx_pad": np.zeros((b, lay.context), bool),
            "state_h": np.ascontiguousarray(h),
            "state_c": np.ascontiguousarray(c),
        }
        return [np.asarray(o) for o in self.encoder.run(STEP_OUTPUTS, feeds)]

    def _warm_up(self) -> None:
        b = self.config.warmup_batch
        entity = self.artifact.spec.entity
        if self.artifact.incremental:
            lay = self.state_layout
            for n in (1, b, 64):
                self._step_outputs(lay.empty(n), n)
                if self.rebuild_graph is not None:
                    self.whole(
                        np.zeros((n, lay.context, N_NUMERIC), np.float32),
                        np.ones((n, lay.context), np.int64),
                        np.ones((n, lay.context), np.int64),
                    )
            self.score(_synthetic_batch(np.arange(b, dtype=np.int64) % 3, 2, entity))
            return
        for t in self.artifact.spec.buckets:
            self.score(_synthetic_batch(np.arange(b, dtype=np.int64) % (t + 1), t, entity))

    def encode(self, batch: FeatureBatch) -> np.ndarray:
        """History embeddings [B, E] float32 (incremental artifacts: the state rebuilt
        from the window's history, ``scoring.incremental_state.rebuild``)."""
        if self.encoder is None:
            raise ModelLoadError("model not loaded")
        if self.artifact.incremental:
            return self.rebuild_states(
                batch.hist_num, batch.hist_mcc, batch.hist_channel, batch.hist_len
            )[1]
        feeds = {
            "hist_num": batch.hist_num,
            "hist_mcc": batch.hist_mcc,
            "hist_channel": batch.hist_channel,
            "hist_pad": batch.hist_pad,
            "hist_len": batch.hist_len,
        }
        return np.asarray(self._run(self.encoder, feeds, "history_embedding"), dtype=np.float32)

    def head_logits(
        self,
        embedding: np.ndarray,
        cur_num: np.ndarray,
        cur_mcc: np.ndarray,
        cur_channel: np.ndarray,
        cur_entity: np.ndarray | None = None,
    ) -> np.ndarray:
        """Logits [B] (calibrated: the sampling offset is inside the graph).

        ``cur_entity`` is required by, and only fed to, a head trained with entity inputs.
        """
        if self.head is None:
            raise ModelLoadError("model not loaded")
        feeds = {
            "history_embedding": embedding.astype(np.float32, copy=False),
            "cur_num": cur_num,
            "cur_mcc": cur_mcc,
            "cur_channel": cur_channel,
        }
        if self.artifact.spec.entity:
            if cur_entity is None:
                raise ModelLoadError(f"model {self.version} needs entity inputs")
            feeds["cur_entity"] = cur_entity
        return np.asarray(self._run(self.head, feeds, "logit"), dtype=np.float64)

    def _run(
        self, sess: ort.InferenceSession, feeds: dict[str, np.ndarray], output: str
    ) -> np.ndarray:
        if not self.io_bound:
            return np.asarray(sess.run(None, feeds)[0])
        binding = sess.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output(output)  # allocated on the session's device
        sess.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0])

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Sigmoid, with non-finite results replaced by the fallback score (and counted)."""
        with np.errstate(over="ignore", invalid="ignore"):
            p = 1.0 / (1.0 + np.exp(-logits))
        bad = ~np.isfinite(p)
        if bad.any():
            NONFINITE_FALLBACKS.inc(int(bad.sum()))
            p = np.where(bad, self.config.fallback_score, p)
        return p

    def tree_logits(self, batch: FeatureBatch) -> np.ndarray:
        """The tree part's logits [B] (calibrated: trained on re-weighted negatives)."""
        if self.tree is None:
            raise ModelLoadError(f"model {self.version} has no tree part")
        x = tree_inputs(batch, self.artifact.spec)
        prob = self.tree.run([TREE_OUTPUT], {TREE_INPUT: x})[0]
        return tree_logit(np.asarray(prob)[:, 1])

    def part_logits(
        self, batch: FeatureBatch, embedding: np.ndarray | None = None, tree: bool = True
    ) -> dict[str, np.ndarray]:
        """Each part's logits [B]: the sequence model's, and the tree's when it has one
        and ``tree`` asks for it. A non-finite embedding makes the row NaN."""
        emb = self.encode(batch) if embedding is None else embedding
        bad = ~np.isfinite(emb).all(axis=1)
        seq = self.head_logits(
            emb, batch.cur_num, batch.cur_mcc, batch.cur_channel, batch.cur_entity
        )
        out = {SEQUENCE_PART: np.where(bad, math.nan, seq)}
        if tree and self.tree is not None:
            out[TREE_PART] = self.tree_logits(batch)
        return out

    def score(self, batch: FeatureBatch, embedding: np.ndarray | None = None) -> np.ndarray:
        """Served fraud probabilities [B]; runs the encoder unless ``embedding`` is given."""
        parts = self.part_logits(batch, embedding, tree=self.combination.uses_tree)
        return self.probabilities(
            self.combination.logit(parts[SEQUENCE_PART], parts.get(TREE_PART))
        )


def _synthetic_batch(hist_len: np.ndarray, t: int, entity: bool = False) -> FeatureBatch:
    """Rows with the given history lengths, padded to ``t``; zero features (the tree's
    aggregates included, as a featurized batch of either kind carries them), valid ids."""
    b = hist_len.size
    ent = np.zeros((b, N_ENTITY), np.float32) if entity else None
    pad = np.arange(t)[None, :] >= hist_len[:, None]
    return FeatureBatch(
        hist_num=np.zeros((b, t, N_NUMERIC), np.float32),
        hist_mcc=np.where(pad, 0, 1).astype(np.int64),
        hist_channel=np.where(pad, 0, 1).astype(np.int64),
        hist_pad=pad,
        hist_len=hist_len,
        cur_num=np.zeros((b, N_NUMERIC), np.float32),
        cur_mcc=np.ones(b, np.int64),
        cur_channel=np.ones(b, np.int64),
        cur_raw=np.zeros((b, N_NUMERIC), np.float32),
        cur_entity=ent,
        cur_entity_raw=ent,
        aggregates=np.zeros((b, len(AGGREGATES))),
    )
