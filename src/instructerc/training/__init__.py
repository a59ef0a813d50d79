"""Fine-tuning causal LMs on the InstructERC tasks."""
