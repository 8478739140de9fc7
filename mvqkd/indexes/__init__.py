"""mvqkd.indexes"""
