"""The job registry (:class:`JobSpec`, :func:`get_job`) and the built-in jobs that the GUI and the CLI can
start. A job's module is imported by name when it runs (``JobSpec.load``), so this module stays light."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any


@dataclasses.dataclass(frozen=True)
class JobSpec:
    """A job the GUI and CLI can start. ``target``/``config`` are "module:attr" (imported lazily)."""

    name: str
    title: str
    description: str
    target: str
    config: str
    group: str = ""  # one of JOB_GROUPS: where the New Run dialog lists it ("" for jobs outside the app's list)
    summary: str = ""  # one line for the job list; ``description`` is the full text

    def load(self) -> tuple[Callable[..., Any], type]:
        return _resolve(self.target), _resolve(self.config)

    def config_class(self) -> type:
        return _resolve(self.config)


def _resolve(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


#: What a job does, in the order a project usually needs them: {group: heading}.
JOB_GROUPS: dict[str, str] = {
    "collect": "Collect data",
    "label": "Label",
    "reward": "Learn a reward",
    "policy": "Train a policy",
    "evaluate": "Evaluate",
    "demo": "Demos and experiments",
}

_REGISTRY: dict[str, JobSpec] = {}


def register_job(spec: JobSpec) -> JobSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] != spec:
        raise ValueError(f"job {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def get_job(name: str) -> JobSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY)) or "none"
        raise KeyError(f"unknown job {name!r}; known jobs: {known}") from None


def list_jobs() -> list[JobSpec]:
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


# ---------------------------------------------------------------------------- built-in jobs
register_job(
    JobSpec(
        name="synthetic_preferences",
        group="demo",
        summary="Reward learning on simulated labels, checked against the truth.",
        title="Reward model on synthetic preferences",
        description="Fit a Bradley-Terry reward MLP to simulated labels of random feature vectors "
        "with a known true reward; reports held-out accuracy and correlation with the truth.",
        target="rlhf_core.trainers.control.synthetic_preferences:train_synthetic_preferences",
        config="rlhf_core.trainers.control.synthetic_preferences:SyntheticPreferenceConfig",
    )
)

register_job(
    JobSpec(
        name="rollouts",
        group="collect",
        summary="Roll out a policy; store videos, cut clips, queue pairs.",
        title="Collect trajectories",
        description="Roll out a random policy, an SB3 checkpoint or a behavioural-cloning policy (optionally "
        "with D-REX noise levels); store trajectories with video, cut clips and queue pairs.",
        target="rlhf_core.sources.rollouts:collect_rollouts",
        config="rlhf_core.sources.rollouts:RolloutConfig",
    )
)
register_job(
    JobSpec(
        name="learner",
        group="collect",
        summary="PPO on the true reward; its checkpoints as ranked demos (T-REX).",
        title="Learner checkpoints (PPO on the true reward)",
        description="Train PPO on the true reward, save a checkpoint every N steps and roll out each one: "
        "ranked demonstrations from a learner, as in T-REX.",
        target="rlhf_core.sources.learner:train_learner",
        config="rlhf_core.sources.learner:LearnerConfig",
    )
)
register_job(
    JobSpec(
        name="bc",
        group="policy",
        summary="Fit a policy to recorded demonstrations.",
        title="Behavioural cloning",
        description="Fit a policy to demonstration trajectories (discrete or continuous actions).",
        target="rlhf_core.trainers.control.bc:train_bc",
        config="rlhf_core.trainers.control.bc:BCConfig",
    )
)
register_job(
    JobSpec(
        name="label_pairs",
        group="label",
        summary="A simulated teacher answers the queued clip pairs.",
        title="Label queued pairs with a simulated teacher",
        description="B-Pref teachers (oracle, noisy, mistake, skip, equal, myopic) label the pairs waiting in "
        "the queue from the true rewards.",
        target="rlhf_core.labelers.label_pairs:label_pairs",
        config="rlhf_core.labelers.label_pairs:LabelPairsConfig",
    )
)
register_job(
    JobSpec(
        name="active_queries",
        group="label",
        summary="Queue the pairs the reward model is least sure about.",
        title="Active queries (where the reward model is unsure)",
        description="From a pool of clips of one environment or of text responses, queue the pairs on which the "
        "reward ensemble's members disagree most (or whose P(left) is nearest 0.5, or random pairs); each entry "
        "keeps every member's prediction, shown as \"why this pair\" while labelling. Text: small heads on a text "
        "reward model's backbone, each fitted to a bootstrap of the labels.",
        target="rlhf_core.labelers.active_queries:queue_active_pairs",
        config="rlhf_core.labelers.active_queries:ActiveQueriesConfig",
    )
)
register_job(
    JobSpec(
        name="extrapolation_demo",
        group="demo",
        summary="T-REX / D-REX end to end: beat the demonstrations?",
        title="Reward extrapolation demo (T-REX / D-REX)",
        description="Mediocre demonstrations from an early learner, ranked by their true return or only by the "
        "checkpoint they came from (T-REX), or one demonstrator cloned and ranked by injected noise (D-REX) -> a "
        "learned reward -> PPO on it -> a policy evaluated on the true return, with the extrapolation check on "
        "unseen trajectories.",
        target="rlhf_core.experiments.extrapolation:run_extrapolation_demo",
        config="rlhf_core.experiments.extrapolation:ExtrapolationDemoConfig",
    )
)
register_job(
    JobSpec(
        name="reward_model",
        group="reward",
        summary="Fit a reward ensemble to clip labels, rankings or noise levels.",
        title="Train a reward model",
        description="Fit a Bradley-Terry reward ensemble to this project's pairwise labels, rankings, learner "
        "checkpoints (T-REX) or noise levels (D-REX).",
        target="rlhf_core.trainers.control.reward_model:train_reward_model",
        config="rlhf_core.trainers.control.reward_model:RewardModelConfig",
    )
)
register_job(
    JobSpec(
        name="ppo_learned",
        group="policy",
        summary="Train PPO on a learned reward; scored on the true return.",
        title="PPO on a learned reward",
        description="Train PPO on a reward model of this project; evaluate on the true return; store a video.",
        target="rlhf_core.trainers.control.ppo_learned:train_ppo_learned",
        config="rlhf_core.trainers.control.ppo_learned:PPOLearnedConfig",
    )
)
register_job(
    JobSpec(
        name="generate",
        group="collect",
        summary="Sample several responses per prompt, to compare.",
        title="Generate responses (text)",
        description="Sample K responses per prompt from a language model (the bundled SmolLM2-135M-Instruct "
        "or a local folder) and store them as items to compare; prompts from the project or a built-in set.",
        target="rlhf_core.sources.generate:generate_responses",
        config="rlhf_core.sources.generate:GenerateConfig",
    )
)
register_job(
    JobSpec(
        name="preference_rl",
        group="policy",
        summary="PPO whose reward keeps learning from its own clips (online).",
        title="Online preference RL (Christiano et al.)",
        description="PPO on a reward model that keeps learning from comparisons of the agent's own clips, chosen "
        "by ensemble disagreement; answered by a simulated teacher or by you in Label clips.",
        target="rlhf_core.trainers.control.preference_rl:train_preference_rl",
        config="rlhf_core.trainers.control.preference_rl:PreferenceRLConfig",
    )
)
register_job(
    JobSpec(
        name="text_reward_model",
        group="reward",
        summary="Fine-tune a language model to score responses.",
        title="Train a text reward model",
        description="Fine-tune a language model with a scalar head (Bradley-Terry) on this project's comparisons "
        "of responses to the same prompt; saves a Hugging Face folder and reports held-out accuracy. With "
        "gold_fraction > 0 it also trains a held-out gold reward model on labels the first never sees.",
        target="rlhf_core.trainers.text.reward_model:train_text_reward_model",
        config="rlhf_core.trainers.text.reward_model:TextRewardModelConfig",
    )
)
register_job(
    JobSpec(
        name="sft",
        group="policy",
        summary="Fine-tune a language model on demonstrations and corrections.",
        title="Supervised fine-tuning (text)",
        description="Next-token cross-entropy on the completion tokens of this project's demonstrations "
        "(corrections, responses marked as demonstrations, the chosen side of comparisons); held-out loss; "
        "saves the policy as a checkpoint.",
        target="rlhf_core.trainers.text.sft:train_sft",
        config="rlhf_core.trainers.text.sft:SFTConfig",
    )
)
register_job(
    JobSpec(
        name="ppo_text",
        group="policy",
        summary="PPO on a text reward model, KL penalty to the reference.",
        title="PPO on a text reward (per-token KL penalty)",
        description="PPO with a value head, GAE and a clipped objective on a learned text reward model; the reward "
        "is shaped per token with -beta * KL to the reference (fixed or adaptive beta); optional gold reward.",
        target="rlhf_core.trainers.text.ppo:train_ppo_text",
        config="rlhf_core.trainers.text.ppo:PPOTextConfig",
    )
)
register_job(
    JobSpec(
        name="ppo_demo",
        group="demo",
        summary="Reward over-optimisation: proxy reward up, gold reward down.",
        title="Reward over-optimisation demo (PPO, Gao et al.)",
        description="A hidden gold reward labels pairs of the model's own samples; a small proxy reward model "
        "learns from them; PPO optimises the proxy with a KL penalty beta while the gold reward is measured.",
        target="rlhf_core.experiments.ppo_overoptimisation.run:run_ppo_demo",
        config="rlhf_core.experiments.ppo_overoptimisation.config:PPODemoConfig",
    )
)
register_job(
    JobSpec(
        name="ai_labels",
        group="label",
        summary="An AI judge or a text reward model labels queued text pairs.",
        title="AI feedback: label text pairs (RLAIF)",
        description="An AI labeller answers the text pairs waiting in the queue: a language-model judge asked one "
        "principle of the constitution per pair (read from its next-token probabilities of A/B, both orders), "
        "or a trained text reward model. Labels carry source 'ai' for review in Label text.",
        target="rlhf_core.labelers.ai_feedback:label_with_ai",
        config="rlhf_core.labelers.ai_feedback:AILabelConfig",
    )
)
register_job(
    JobSpec(
        name="critique_revise",
        group="label",
        summary="Constitutional AI: a model critiques and revises responses.",
        title="Critique and revise (Constitutional AI, supervised stage)",
        description="For each prompt the policy samples a response; a critic model (the policy itself, or any "
        "local model) critiques it under one principle of the constitution and rewrites it, for one or more "
        "rounds. Each revision is stored as a correction preferred over what it revised (source 'ai'), so SFT, "
        "the text reward model and DPO learn from it; the critique is kept with it.",
        target="rlhf_core.labelers.critique_revise:critique_and_revise",
        config="rlhf_core.labelers.critique_revise:CritiqueReviseConfig",
    )
)
register_job(
    JobSpec(
        name="grpo",
        group="policy",
        summary="Group-relative policy optimisation on text rewards.",
        title="GRPO on rule-based or learned rewards (text)",
        description="Group-relative policy optimisation: G samples per prompt, advantages normalised within each "
        "group, clipped ratio loss plus k3 KL to the reference; rewards for the <think>/<answer> format, the "
        "exact answer (generated arithmetic tasks or the project's prompts with gold answers), length, or a "
        "text reward model; held-out gold accuracy.",
        target="rlhf_core.trainers.text.grpo:train_grpo",
        config="rlhf_core.trainers.text.grpo:GRPOConfig",
    )
)
register_job(
    JobSpec(
        name="dpo",
        group="policy",
        summary="Direct preference optimisation on text comparisons; no sampling.",
        title="DPO on the project's text comparisons",
        description="Direct preference optimisation: -log sigmoid(beta * (chosen log-ratio - rejected log-ratio)) "
        "against a frozen reference, on this project's decided comparisons of two responses to the same prompt; "
        "implicit rewards, margins and held-out accuracy; saves the policy as a checkpoint.",
        target="rlhf_core.trainers.text.dpo:train_dpo",
        config="rlhf_core.trainers.text.dpo:DPOConfig",
    )
)
register_job(
    JobSpec(
        name="grpo_demo",
        group="demo",
        summary="GRPO learns a format and exact arithmetic answers (~15 min).",
        title="GRPO demo: arithmetic with format and correctness rewards",
        description="SmolLM2-135M learns the <think>/<answer> format and exact answers on generated word problems "
        "with GRPO; reward, KL, length and held-out accuracy before and after (about 15 minutes on 2 cores).",
        target="rlhf_core.experiments.grpo_arithmetic:run_grpo_demo",
        config="rlhf_core.experiments.grpo_arithmetic:GRPODemoConfig",
    )
)
register_job(
    JobSpec(
        name="text_eval",
        group="evaluate",
        summary="pass@1, cons@k, pass@k and win rate of a text policy.",
        title="Evaluate a text policy (pass@1, cons@k, win rate)",
        description="Greedy pass@1, majority-vote cons@k and pass@k of k samples on held-out arithmetic tasks or "
        "on the project's prompts with gold answers (prompt_source project); "
        "optionally the win rate against the reference model judged by a text reward model.",
        target="rlhf_core.analysis.text_evaluation:evaluate_text_policy",
        config="rlhf_core.analysis.text_evaluation:TextEvalConfig",
    )
)
register_job(
    JobSpec(
        name="refusal_eval",
        group="evaluate",
        summary="Over- and under-refusal of a text policy (helpful vs harmless).",
        title="Refusal evaluation (helpful vs harmless)",
        description="One response per prompt tagged 'refuse' or 'comply' (the starter set's harmlessness prompts, "
        "or the project's own), judged by a documented list of refusal phrases: the refusal rate on prompts to "
        "refuse (under-refusal = 1 - that) and on benign prompts (over-refusal), with n and Wilson 95 % "
        "intervals and example responses of each cell; optionally also judged by a text reward model or a judge "
        "model, with the two verdicts' agreement.",
        target="rlhf_core.analysis.refusal:evaluate_refusals",
        config="rlhf_core.analysis.refusal:RefusalEvalConfig",
    )
)
register_job(
    JobSpec(
        name="cai_demo",
        group="demo",
        summary="Constitutional AI: critique, revise, SFT; refusals before/after.",
        title="Constitutional AI demo (critique, revise, SFT, refusal evaluation)",
        description="The supervised stage of Constitutional AI end to end: critique_revise on half of the "
        "harmlessness prompts, SFT on the revisions, and the refusal evaluation on the other half before and "
        "after; optionally AI preferences under the constitution and DPO. Each stage is a run under the demo's.",
        target="rlhf_core.experiments.cai:run_cai_demo",
        config="rlhf_core.experiments.cai:CAIDemoConfig",
    )
)
register_job(
    JobSpec(
        name="round",
        group="policy",
        summary="One round of iterated RLHF: sample, label, refit, retrain.",
        title="Next round (iterated RLHF)",
        description="From a policy: sample responses (text) or roll out episodes and cut clips (control), queue "
        "pairs of them (new vs new, and new vs the previous round's), label them (a simulated teacher, an AI "
        "judge, or people: the round then waits), refit the reward model on all labels, and train the next policy "
        "from this one (DPO, GRPO or PPO; control: PPO warm-started). Each step is a run under the round's.",
        target="rlhf_core.rounds:run_round",
        config="rlhf_core.rounds:RoundConfig",
    )
)
