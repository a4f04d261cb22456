"""Configurations per second through the vectorized step model (``tune bench`` runs the same)."""

from tuner.benchmarks import main

if __name__ == "__main__":
    main()
