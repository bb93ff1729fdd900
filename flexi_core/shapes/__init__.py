"""The embedded toy world: procedural shapes (data), their autoencoders (vae), the text encoder glue (text),
the judge, base training (train), and the measuring tools that need the judge (evaluate, frontier, card).

The method itself (flexible, families, schedule, flops, sampling, distill, loading) lives one level up.
"""
