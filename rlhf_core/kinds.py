"""Checkpoint and sample kinds: the words stored in ``checkpoints.kind`` and ``samples.kind``, named once.

A checkpoint's kind says what its file or folder holds and who can load it; a sample's kind says what
its JSON payload holds and which view reads it. Jobs write these names and views look runs up by them.
"""

# ---------------------------------------------------------------------------------- checkpoints
SB3_PPO = "sb3_ppo"  #: a Stable-Baselines3 PPO zip (learner, ppo_learned, preference_rl)
BC_POLICY = "bc_policy"  #: a behavioural-cloning policy (rlhf_core.trainers.control.bc)
REWARD_ENSEMBLE = "reward_ensemble"  #: a control reward ensemble (rlhf_core.rewards)
REWARD_MLP = "reward_mlp"  #: the synthetic-preferences reward MLP
TEXT_POLICY = "text_policy"  #: a causal-LM safetensors folder (sft, dpo, grpo, ppo_text, imports)
TEXT_REWARD_MODEL = "text_reward_model"  #: a text reward model folder (backbone + reward head)
CHECKPOINT_KINDS = (SB3_PPO, BC_POLICY, REWARD_ENSEMBLE, REWARD_MLP, TEXT_POLICY, TEXT_REWARD_MODEL)

# ---------------------------------------------------------------------------------- samples
SAMPLE_TEXT_RL = "text_rl"  #: {step, prompt, response, reward, components, length, gold} (Text RL page)
SAMPLE_GENERATION = "generation"  #: a batch of generated completions (Generate page)
SAMPLE_TEXT_EVAL = "text_eval"  #: one evaluated task or win-rate comparison (text_eval job)
SAMPLE_RESPONSE_SCORES = "response_scores"  #: text reward model scores vs length (Text reward model page)
SAMPLE_AI_LABEL = "ai_label"  #: one AI label with the judge's probabilities
SAMPLE_NOISE_CURVE = "noise_curve"  #: D-REX return by noise level (extrapolation view)
SAMPLE_EXTRAPOLATION = "extrapolation"  #: predicted vs true returns (extrapolation view)
SAMPLE_CRITIQUE = "critique_revision"  #: one response's critique/revision chain (critique_revise job)
SAMPLE_REFUSAL = "refusal"  #: an example response of one cell (label x refused) of the refusal evaluation
SAMPLE_KINDS = (SAMPLE_TEXT_RL, SAMPLE_GENERATION, SAMPLE_TEXT_EVAL, SAMPLE_RESPONSE_SCORES, SAMPLE_AI_LABEL,
                SAMPLE_NOISE_CURVE, SAMPLE_EXTRAPOLATION, SAMPLE_CRITIQUE, SAMPLE_REFUSAL)

# ---------------------------------------------------------------------------------- settings
#: the checkpoint kinds a setting of this name takes in every job (one vocabulary: a field name means one
#: thing); the app shows these settings as pickers of the project's artefacts
FIELD_KINDS: dict[str, tuple[str, ...]] = {
    "model": (TEXT_POLICY,),
    "judge_model": (TEXT_POLICY,),
    "critic_model": (TEXT_POLICY,),
    "policy_folder": (TEXT_POLICY,),
    "reference_model": (TEXT_POLICY,),
    "proxy_model": (TEXT_POLICY,),
    "reward_model": (TEXT_REWARD_MODEL,),
    "gold_reward_model": (TEXT_REWARD_MODEL,),
    "reward_checkpoint_id": (REWARD_ENSEMBLE,),
    "checkpoint_id": (SB3_PPO, BC_POLICY),
    "from_policy": (TEXT_POLICY, SB3_PPO),  # a round: the policy of either track
}
