"""mvqkd.quantizer"""
