"""The recommender: sees only the lake (logs and catalog), never the world's truth."""
