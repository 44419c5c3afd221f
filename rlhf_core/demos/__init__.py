"""End-to-end demonstrations (each a job, also runnable as `python -m rlhf_core demo NAME`)."""
