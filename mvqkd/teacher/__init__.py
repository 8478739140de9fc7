"""mvqkd.teacher"""
