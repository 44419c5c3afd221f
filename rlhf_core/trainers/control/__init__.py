"""Control-track trainers: reward models from preferences over clips and rankings (Bradley-Terry,
T-REX), PPO on a learned reward, online preference RL, behavioural cloning."""
