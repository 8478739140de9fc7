"""mvqkd.losses"""
