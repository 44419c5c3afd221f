"""The built-in jobs that the GUI and the CLI can start (imported lazily, by name)."""

from rlhf_core.jobs import JobSpec, register_job

register_job(
    JobSpec(
        name="synthetic_preferences",
        title="Reward model on synthetic preferences",
        description="Fit a Bradley-Terry reward MLP to simulated labels of random feature vectors "
        "with a known true reward; reports held-out accuracy and correlation with the truth.",
        target="rlhf_core.trainers.synthetic_preferences:train_synthetic_preferences",
        config="rlhf_core.trainers.synthetic_preferences:SyntheticPreferenceConfig",
    )
)
