"""mvqkd.student"""
