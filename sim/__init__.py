"""The synthetic world: users, items, choice model, traffic. numpy only; knows no recommender."""
