"""mvqkd.data"""
