"""FlexiDiT: run a pre-trained diffusion transformer at several patch sizes and spend less compute per sample."""
