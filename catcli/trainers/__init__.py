"""The two trainers, named after their commands: sft and rl."""
