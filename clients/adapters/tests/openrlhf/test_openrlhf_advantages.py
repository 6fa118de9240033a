"""The OpenRLHF adapter on OpenRLHF 0.11.2's own Experience, advantage code and PolicyLoss, scoring on a real server.

Covered: `CounterfactualAdvantages` on OpenRLHF's real `RemoteExperienceMaker`, built by its own
constructor with the arguments OpenRLHF's own parser makes (`openrlhf_cli`), its
`compute_advantages_and_returns`, real `Experience` objects, and OpenRLHF's `PolicyLoss`; policy sync
through Ray tasks that save as the GPU actor group would, including a load slower than the client's
timeout. The entry point, the launch script and the worker setup hook: test_launch.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import httpx
import pytest
import torch
from adapter_traces import COMPLETIONS, PROMPTS, encode, pad
from ccapo_adapters import CounterfactualConfig, WeightProvider, score_token_batch
from ccapo_adapters.openrlhf import (
    SETTINGS_ENV,
    CounterfactualAdvantages,
    check_sync_dir,
    experience_weights,
    provider_from_env,
)
from ccapo_client import RemoteScorer
from openrlhf_cli import openrlhf_args
from scoring_server import READY_TIMEOUT_S, spawn_server, wait_ready
from slow_swaps import slow_sync_config, wait_until_live

RECIPE = Path(__file__).resolve().parents[4] / "examples" / "openrlhf"


def remote(server_url: str) -> WeightProvider:
    return WeightProvider.remote(CounterfactualConfig(provider="remote", server_url=server_url))


def make_experience(modules, tokenizer, observation: list[int] | None = None):
    """Two prompts x two samples as OpenRLHF's Experience; with `observation`, row 0 holds an environment turn."""
    prompts = encode(tokenizer, [PROMPTS[0], PROMPTS[0], PROMPTS[1], PROMPTS[1]])
    responses = encode(tokenizer, [COMPLETIONS[0], COMPLETIONS[1], COMPLETIONS[1], COMPLETIONS[0]], eos=True)
    rows, actions = [], []
    for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        half = len(response) // 2
        turns = (
            [(response[:half], 1), (observation, 0), (response[half:], 1)]
            if observation and row == 0
            else [(response, 1)]
        )
        sequence, action = list(prompt), [0] * len(prompt)
        for ids, is_action in turns:
            sequence += ids
            action += [is_action] * len(ids)
        rows.append(sequence)
        actions.append(action)
    sequences, attention = pad(rows, tokenizer.pad_token_id, "right")
    action_mask = pad(actions, 0, "right")[0][:, 1:].bool()  # action j is sequence token j + 1
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0])  # one right, one wrong per prompt
    experience = modules.experience.Experience(
        sequences=sequences,
        attention_mask=attention,
        action_mask=action_mask,
        rewards=rewards,
        kl=torch.zeros(action_mask.shape),
        values=torch.zeros(action_mask.shape),
        index=list(range(4)),
        info={"reward": rewards.clone()},
    )
    return experience, (prompts, responses)


def experience_maker(
    modules,
    provider: WeightProvider | Literal["env"] | None,
    estimator: str = "reinforce_baseline",
    output_dir: str = "/tmp/ccapo-openrlhf-unused",
    actor_group: Any = None,
    extra_args: tuple[str, ...] = (),
):
    """OpenRLHF's maker (with the weighting, or stock without a provider; "env": the weighting's provider
    from CCAPO_ADAPTER_SETTINGS, as in a run), built by its own constructor with the arguments OpenRLHF's
    parser makes and its fixed KL controller, as its PPO trainer builds it. The critic, reward and
    reference groups are GPU actors it only stores. The strategy is a namespace holding those arguments:
    the maker reads only `strategy.args`, and OpenRLHF's `DeepspeedStrategy` module imports peft, which
    this environment leaves out."""
    from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController

    args = openrlhf_args(
        [
            *("--actor.model_name_or_path", "unused", "--reward.remote_url", "reward.py"),
            *("--algo.advantage.estimator", estimator, "--rollout.n_samples_per_prompt", "2"),
            *("--algo.advantage.no_std_norm", "--algo.kl.init_coef", "0", "--ckpt.output_dir", output_dir),
            *extra_args,
        ]
    )
    base = modules.maker.RemoteExperienceMaker
    preset = {} if provider == "env" else {"weight_provider": provider}
    cls = base if provider is None else type("Maker", (CounterfactualAdvantages, base), preset)
    kl = FixedKLController(args.algo.kl.init_coef)
    return cls(actor_group, None, None, None, kl, SimpleNamespace(args=args), None)


@pytest.mark.parametrize("estimator", ["reinforce_baseline", "group_norm", "rloo"])
def test_openrlhfs_advantages_are_weighted_on_action_tokens(openrlhf_modules, tokenizer, server_url, estimator):
    observation = encode(tokenizer, [" (calculator says: 24)"])[0]
    experience, (prompts, responses) = make_experience(openrlhf_modules, tokenizer, observation)
    stock_maker = experience_maker(openrlhf_modules, None, estimator)
    stock = stock_maker.compute_advantages_and_returns([copy.deepcopy(experience)])[0]
    our_maker = experience_maker(openrlhf_modules, remote(server_url), estimator)
    ours = our_maker.compute_advantages_and_returns([experience])[0]

    mask = experience.action_mask
    assert stock.advantages[mask].abs().min() > 0  # the baseline left every action a nonzero advantage
    weights = experience_weights(experience.sequences, experience.attention_mask, mask, remote(server_url)).weights
    torch.testing.assert_close(ours.advantages[mask], (stock.advantages * weights)[mask])
    torch.testing.assert_close(ours.advantages[~mask], stock.advantages[~mask])
    assert ours.info["ccapo_weight_mean"].shape == (4,)

    # Rows without an environment turn: the weights are the server's for the plain completion.
    expected = score_token_batch(RemoteScorer(server_url), prompts, responses, config=our_maker.weight_provider.scoring)
    for row in (1, 2, 3):
        on_actions = (ours.advantages[row] / stock.advantages[row])[mask[row]]
        torch.testing.assert_close(on_actions, expected.weights[row, : len(responses[row])])


def test_weighted_advantages_weight_each_tokens_gradient_in_openrlhfs_policy_loss(
    openrlhf_modules, tokenizer, server_url
):
    experience, _ = make_experience(openrlhf_modules, tokenizer)
    stock = experience_maker(openrlhf_modules, None).compute_advantages_and_returns([copy.deepcopy(experience)])[0]
    ours = experience_maker(openrlhf_modules, remote(server_url)).compute_advantages_and_returns([experience])[0]
    mask = experience.action_mask
    weights = torch.where(mask, ours.advantages / torch.where(mask, stock.advantages, 1.0), 1.0)
    assert not torch.allclose(weights[mask], torch.ones(int(mask.sum())))

    torch.manual_seed(0)
    old = torch.randn(mask.shape) * 0.1
    start = old + torch.randn(mask.shape) * 0.3  # ratios beyond the clip range on some tokens
    loss_fn = openrlhf_modules.loss.PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.28, dual_clip=3.0)

    def gradient(advantages: torch.Tensor) -> torch.Tensor:
        log_probs = start.clone().requires_grad_(True)
        output = loss_fn(log_probs, old, advantages, action_mask=mask)
        loss = output[0] if isinstance(output, tuple) else output
        loss.backward()
        return log_probs.grad

    # PPO clip and dual clip are positively homogeneous in each token's advantage: weight w >= 0 on a
    # token's advantage is weight w on that token's gradient.
    torch.testing.assert_close(gradient(ours.advantages), weights * gradient(stock.advantages))


def test_a_row_without_actions_stays_uniform(openrlhf_modules, tokenizer, server_url):
    experience, _ = make_experience(openrlhf_modules, tokenizer)
    experience.action_mask[1] = False
    batch = experience_weights(
        experience.sequences, experience.attention_mask, experience.action_mask, remote(server_url)
    )
    assert torch.all(batch.weights[1] == 1.0) and batch.errors[1] is None
    with pytest.raises(ValueError, match="S - 1"):
        experience_weights(experience.sequences, experience.attention_mask, experience.action_mask[:, :-1], None)


def test_the_maker_builds_its_provider_from_the_runtime_env(openrlhf_modules, server_url, monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    with pytest.raises(ValueError, match=SETTINGS_ENV):
        provider_from_env()
    monkeypatch.setenv(SETTINGS_ENV, json.dumps({"provider": "remote", "server_url": server_url, "scoring": {"x": 1}}))
    with pytest.raises(ValueError, match="x"):  # the server rejects the scoring config when the maker is built
        provider_from_env()
    settings = json.loads((RECIPE / "counterfactual.json").read_text())
    # The recipe's settings, over HTTP (its alternative to the Ray Serve app) and without policy sync.
    http = {**settings, "provider": "remote", "server_url": server_url, "sync_every": 0}
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(http))
    maker = experience_maker(openrlhf_modules, "env")
    assert maker.weight_provider.config.server_url == server_url


@pytest.fixture(scope="module")
def local_ray():
    """A one-CPU local Ray, for the actor group's save tasks."""
    import ray

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class ActorGroupOnCPU:
    """Stands in for OpenRLHF's `RayActorGroup` of DeepSpeed actors (GPU only): `async_save_model` returns
    the refs of real Ray tasks that write the HF checkpoint its rank 0 would, which the maker waits on."""

    def __init__(self, ray, source: str, output_dir: Path):
        self.source, self.output_dir, self.saves = source, output_dir, 0
        self._copy = ray.remote(shutil.copytree)

    def async_save_model(self) -> list:
        self.saves += 1
        return [self._copy.remote(self.source, self.output_dir, dirs_exist_ok=True)]


def test_policy_sync_saves_the_actor_and_the_server_loads_it(
    openrlhf_modules, tokenizer, server_url, model_root, tiny_model_dir, local_ray
):
    output_dir = model_root / "openrlhf-output"
    config = CounterfactualConfig(
        provider="remote", server_url=server_url, admin_key="admin", sync_every=1, sync_dir=str(output_dir)
    )
    group = ActorGroupOnCPU(local_ray, tiny_model_dir, output_dir)
    maker = experience_maker(
        openrlhf_modules, WeightProvider.remote(config), output_dir=str(output_dir), actor_group=group
    )
    first = httpx.get(f"{server_url}/v1/model").json()["version"]

    experience, _ = make_experience(openrlhf_modules, tokenizer)
    maker.compute_advantages_and_returns([experience])  # step 0: the starting policy is pushed, whatever was served
    assert group.saves == 1 and experience.info["ccapo_policy_lag_steps"].tolist() == [0.0] * 4
    started = httpx.get(f"{server_url}/v1/model").json()["version"]
    assert started != first
    experience, _ = make_experience(openrlhf_modules, tokenizer)
    maker.compute_advantages_and_returns([experience])  # step 1: one update later, synced before scoring
    assert group.saves == 2 and experience.info["ccapo_policy_lag_steps"].tolist() == [0.0] * 4
    assert httpx.get(f"{server_url}/v1/model").json()["version"] != started
    assert maker.weight_provider.synced_step == 1


def test_sync_dir_must_be_where_openrlhf_saves(server_url, model_root):
    config = CounterfactualConfig(
        provider="remote", server_url=server_url, sync_every=1, sync_dir=str(model_root / "a"), admin_key="admin"
    )
    with pytest.raises(ValueError, match="output_dir"):
        check_sync_dir(WeightProvider(config, None), str(model_root / "b"))
    check_sync_dir(WeightProvider(config, None), str(model_root / "a"))


def test_the_recipes_reward_scores_gsm8k_answers():
    spec = importlib.util.spec_from_file_location("gsm8k_reward", RECIPE / "gsm8k_reward.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    label = "Natalia sold 48/2 = 24 clips in May.\n#### 72"
    rewards = module.reward_func(
        ["Q? So 48 + 24 = 72.\n#### 72", "Q? I think 70.", "Q? 1,000\n#### 1,000"],
        ["Q?", "Q?", "Q?"],
        [label, label, "#### 1000"],
    )
    assert rewards["rewards"].tolist() == [1.0, 0.0, 1.0]


def test_a_policy_load_slower_than_the_client_timeout_is_pending_and_training_goes_on(
    openrlhf_modules, tokenizer, model_root, tiny_model_dir, local_ray
):
    """Each swap loads for 4 s against a 1 s client timeout: step 0's push is pending, not an exception
    (once, httpx.ReadTimeout ended OpenRLHF's trainer); step 1 is scored by the live model with the lag
    counted and saves nothing over the checkpoint being loaded; the push counts once live."""
    output_dir = model_root / "openrlhf-slow"
    env = {"CCAPO_ADMIN_KEY": "admin", "CCAPO_MODEL_ROOTS": str(model_root)}
    server = spawn_server(tiny_model_dir, env, load_delay_s=4.0)
    try:
        wait_ready(server, READY_TIMEOUT_S)
        config = slow_sync_config(server.url, output_dir, client_timeout_s=1.0, swap_wait_s=0.1)
        group = ActorGroupOnCPU(local_ray, tiny_model_dir, output_dir)
        maker = experience_maker(
            openrlhf_modules, WeightProvider.remote(config), output_dir=str(output_dir), actor_group=group
        )
        lags = []
        for _ in range(2):
            experience, _ = make_experience(openrlhf_modules, tokenizer)
            maker.compute_advantages_and_returns([experience])
            lags.append(experience.info["ccapo_policy_lag_steps"].tolist())
        assert lags == [[0.0] * 4, [1.0] * 4] and group.saves == 1
        provider = maker.weight_provider
        wait_until_live(provider)
        assert provider.synced_step == 0 and httpx.get(f"{server.url}/v1/model").json()["version"] == "2"
    finally:
        server.discard()
