"""Jobs and helpers that make items to label: rollouts (random, checkpoints, BC with noise), learner
checkpoints, keyboard demonstrations and text generation."""
