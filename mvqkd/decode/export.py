"""Export a student to ONNX for sherpa-onnx's offline transducer (icefall's layout).

Files in ``out_dir``:

- ``encoder.onnx``: inputs ``x`` (N, T, 80) float32 fbank and ``x_lens`` (N,) int64;
  outputs ``encoder_out`` (N, T', joiner_dim), already through the joiner's encoder
  projection, and ``encoder_out_lens`` (N,) int64. Metadata ``model_type``, ``version``,
  ``model_author``, ``comment``.
- ``decoder.onnx``: input ``y`` (N, context_size) int64; output ``decoder_out``
  (N, joiner_dim), through the joiner's decoder projection. Metadata ``context_size``,
  ``vocab_size``. Negative ids (sherpa-onnx's and icefall's start-of-utterance context)
  count as blank, mvqkd's padding.
- ``joiner.onnx``: inputs ``encoder_out`` and ``decoder_out`` (N, joiner_dim); output
  ``logit`` (N, vocab_size). Metadata ``joiner_dim``.
- ``tokens.txt``: ``<piece> <id>`` per line.
- with ``int8``: ``{encoder,decoder,joiner}.int8.onnx`` (onnxruntime dynamic quantization
  of the MatMul weights).

The distillation heads (codebook, KD, CTC) and the pruned loss's projections are not
exported. ``onnx`` and ``onnxruntime`` are needed (``pip install mvqkd[onnx]``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from mvqkd.data.tokenizer import write_tokens

logger = logging.getLogger(__name__)

OPSET = 17


class EncoderForExport(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor):
        out, lens = self.model.encode(x, x_lens)
        return self.model.joiner.encoder_proj(out), lens


class DecoderForExport(nn.Module):
    """icefall and sherpa-onnx start an utterance's context with -1 ("no token") ids, where
    mvqkd's predictor is trained with blank padding: negative ids are mapped to blank."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, y: torch.Tensor):
        y = torch.where(y < 0, torch.full_like(y, self.model.blank_id), y)
        dec = self.model.decoder(y, need_pad=False).squeeze(1)
        return self.model.joiner.decoder_proj(dec)


class JoinerForExport(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, encoder_out: torch.Tensor, decoder_out: torch.Tensor):
        return self.model.joiner(encoder_out, decoder_out, project_input=False)


def add_meta_data(path: Path, meta: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(model, str(path))


def _export(module: nn.Module, args: tuple, path: Path, inputs: list, outputs: list, axes: dict) -> None:
    module.eval()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer and deprecation warnings of the exporter
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs,
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


def export_onnx(model, sp, out_dir, int8: bool = False, comment: str = "mvqkd") -> dict[str, Path]:
    """Write the files of the module docstring for ``model`` (a
    :class:`~mvqkd.student.model.Transducer`) and its tokenizer ``sp``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    cfg = model.cfg
    ctx, joiner_dim = cfg.context_size, model.joiner.output_linear.in_features
    files = {k: out / f"{k}.onnx" for k in ("encoder", "decoder", "joiner")}
    x, x_lens = torch.randn(1, 200, cfg.feature_dim), torch.tensor([200], dtype=torch.int64)
    _export(EncoderForExport(model), (x, x_lens), files["encoder"], ["x", "x_lens"],
            ["encoder_out", "encoder_out_lens"],
            {"x": {0: "N", 1: "T"}, "x_lens": {0: "N"}, "encoder_out": {0: "N", 1: "T"},
             "encoder_out_lens": {0: "N"}})
    add_meta_data(files["encoder"], {"model_type": "conformer", "version": "1",
                                     "model_author": "mvqkd", "comment": comment})
    _export(DecoderForExport(model), (torch.zeros(4, ctx, dtype=torch.int64),), files["decoder"],
            ["y"], ["decoder_out"], {"y": {0: "N"}, "decoder_out": {0: "N"}})
    add_meta_data(files["decoder"], {"context_size": ctx, "vocab_size": cfg.vocab_size})
    enc, dec = torch.rand(3, joiner_dim), torch.rand(3, joiner_dim)
    _export(JoinerForExport(model), (enc, dec), files["joiner"], ["encoder_out", "decoder_out"],
            ["logit"], {"encoder_out": {0: "N"}, "decoder_out": {0: "N"}, "logit": {0: "N"}})
    add_meta_data(files["joiner"], {"joiner_dim": joiner_dim})
    files["tokens"] = out / "tokens.txt"
    write_tokens(sp, files["tokens"])
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        for k in ("encoder", "decoder", "joiner"):
            q = out / f"{k}.int8.onnx"
            quantize_dynamic(model_input=str(files[k]), model_output=str(q),
                             op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8)
            files[f"{k}.int8"] = q
    logger.info("exported %s to %s", ", ".join(p.name for p in files.values()), out)
    return files
