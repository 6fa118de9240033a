"""What the GPU check measures, at which sizes, and how long that should take on one H100.

The estimate is arithmetic on the plan, not a measurement: each section's model FLOPs over a sustained
share of an H100's bf16 throughput, plus what FLOPs do not explain (a fixed cost per forward pass for
kernel launches and Python, per decoding step, per process start and per model saved or loaded).
"""

from __future__ import annotations

from dataclasses import dataclass

# The published Qwen2.5 configs, minus what a random init does not need.
QWEN = dict(vocab_size=151936, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6)
QWEN_1_5B = dict(
    hidden_size=1536,
    intermediate_size=8960,
    num_hidden_layers=28,
    num_attention_heads=12,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    **QWEN,
)
TINY = {**QWEN_1_5B, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}

SECTIONS = ("engine", "reference", "horizon", "server", "train", "batch")
DEFAULT_SECTIONS = ("engine", "reference", "horizon", "server", "train")  # "batch": ask for it with --only
BUDGET_S = 300.0  # a default run must fit one short GPU slot

# One H100 SXM: 989 TFLOP/s dense bf16; a 1.5B model's passes sustain about a third of it.
H100_FLOPS = 989e12
SUSTAINED = 0.3
PASS_S = 0.02  # per forward pass: ~30 kernels per layer x 28 layers, launched from Python
DECODE_STEP_S = 0.03  # per generated token of a batch (eager decoding is launch-bound)
PROCESS_S = 20.0  # a Python process importing torch and transformers, then initializing CUDA
SAVE_LOAD_BYTES_PER_S = 1e9  # writing or reading a checkpoint


@dataclass(frozen=True)
class Plan:
    """Sizes of every measurement: the real run's, or the dry run's tiny ones."""

    device: str
    dtype: str  # a torch dtype's name
    shape: dict
    model: str  # what the shape is, for the report
    lengths: tuple[int, ...] = (1024, 4096, 8192)  # engine against plain forwards
    spans: int = 16  # the engine's many-row case: spans deleted in one trace
    repeats: int = 3
    traces: int = 32  # engine against the reference; requests per server row
    horizon_tokens: int = 4096
    horizon_traces: int = 2
    horizon_spans: int = 64
    horizon_windows: tuple[int, ...] = (32, 128)
    clients: tuple[int, ...] = (1, 8, 32)
    grpo: tuple[str, ...] = ()  # TrainConfig overrides for the training step
    budgets: tuple[int, ...] = (32768, 65536, 131072, 262144, 524288)  # max_batch_tokens tried in "batch"
    probe: tuple[int, int, int] = (256, 768, 10)  # "batch": prompt tokens, completion tokens, spans

    @property
    def generations(self) -> tuple[int, int]:
        """(sequences, tokens each) the training step generates."""
        values = dict(item.split("=", 1) for item in self.grpo)
        sequences = int(values.get("num_generations", 1)) * int(values.get("prompts_per_step", 1))
        return sequences, int(values.get("max_completion_length", 0))


def real_plan() -> Plan:
    return Plan(
        device="cuda",
        dtype="bfloat16",
        shape=QWEN_1_5B,
        model="Qwen2.5-1.5B's shape",
        grpo=(
            "num_generations=8",
            "prompts_per_step=1",
            "max_completion_length=768",
            "generation_batch_size=8",
            "micro_batch_size=8",
            "lora={r: 32, alpha: 32, dropout: 0.1}",
            "gradient_checkpointing=true",
            "dtype=bfloat16",
            "temperature=0.6",
            "top_p=0.95",
        ),
    )


def dry_plan() -> Plan:
    return Plan(
        device="cpu",
        dtype="float32",
        shape={**TINY, "vocab_size": 49152},
        model="a tiny Qwen2 (2 layers of 64)",
        lengths=(64, 160),
        spans=3,
        repeats=1,
        traces=2,
        horizon_tokens=300,
        horizon_traces=1,
        horizon_spans=4,
        horizon_windows=(8,),
        clients=(1, 2),
        grpo=("num_generations=2", "prompts_per_step=1", "max_completion_length=8", "micro_batch_size=2"),
        budgets=(256, 512),
        probe=(8, 24, 2),
    )


def parameters(shape: dict) -> tuple[int, int]:
    """(parameters per decoder layer, embedding parameters)."""
    hidden, heads, kv = shape["hidden_size"], shape["num_attention_heads"], shape["num_key_value_heads"]
    kv_width = kv * hidden // heads
    attention = 2 * hidden * hidden + 2 * hidden * kv_width
    return attention + 3 * hidden * shape["intermediate_size"], hidden * shape["vocab_size"]


def flops(shape: dict, tokens: float, context: float) -> float:
    """Decoder FLOPs for `tokens` queries attending to `context` keys each on average (no LM head)."""
    per_layer, _ = parameters(shape)
    layers, hidden = shape["num_hidden_layers"], shape["hidden_size"]
    return tokens * layers * (2 * per_layer + 4 * hidden * context)


def estimate(plan: Plan, sections: tuple[str, ...]) -> dict[str, float]:
    """Seconds each section should take on one H100, and "setup" (the process and the model)."""
    shape, rate = plan.shape, H100_FLOPS * SUSTAINED
    per_layer, embedding = parameters(shape)
    checkpoint_s = 2 * (per_layer * shape["num_hidden_layers"] + embedding) / SAVE_LOAD_BYTES_PER_S

    def passes(tokens: float, context: float, count: float) -> float:
        return flops(shape, tokens, context) / rate + count * PASS_S

    found = {"setup": PROCESS_S + checkpoint_s}
    rounds = plan.repeats + 2  # a warm-up and a profiled run besides the timed rounds
    engine = 0.0
    for n in plan.lengths:
        many = n + plan.spans * n / 2  # a base pass, then each span's suffix (half the trace on average)
        engine += rounds * (passes(4 * n, n / 2, 4) + passes(many, n / 2, 1 + plan.spans * n / 4096))
    found["engine"] = engine
    gsm = plan.traces * 230  # tokens of a GSM trace; about 4 spans each
    found["reference"] = passes(5 * gsm, 115, 5 * plan.traces) + passes(3 * gsm, 115, plan.traces) + 5.0
    exact = plan.horizon_traces * (plan.horizon_tokens + plan.horizon_spans * plan.horizon_tokens / 2)
    windowed = plan.horizon_traces * plan.horizon_spans * (max(plan.horizon_windows) + 40)
    found["horizon"] = 2 * passes(exact, plan.horizon_tokens / 2, exact / 2048) + len(plan.horizon_windows) * 2 * (
        passes(windowed, plan.horizon_tokens, plan.horizon_traces * plan.horizon_spans / 8)
    )
    requests = 2 * len(plan.clients) * plan.traces
    found["server"] = 2 * (PROCESS_S + checkpoint_s) + requests * 5 * PASS_S
    sequences, tokens = plan.generations
    found["train"] = checkpoint_s + tokens * DECODE_STEP_S + passes(4 * sequences * (tokens + 256), tokens, 10) + 15
    found["batch"] = sum(passes(2 * budget, 512, 2 * budget / 1024) for budget in plan.budgets)
    return {name: seconds for name, seconds in found.items() if name == "setup" or name in sections}
