import sys
from pathlib import Path

# make tests/decode/decode_tiny_model.py importable
sys.path.insert(0, str(Path(__file__).parent))
