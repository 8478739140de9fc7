"""mvqkd.decode"""
