"""``grace encode``: embed the texts of a file, with their rationales, in chunks that a re-run of
the same command resumes (``grace.files.chunked``), with a progress bar and an ETA."""

from __future__ import annotations

import argparse
import sys

from .common import add_command, encode_settings

DEFAULT_CHUNK = 256  # texts per chunk: an interruption loses at most this many texts' work


def fingerprint(settings, texts: list[str]) -> str:
    """What the output is made from: the settings (with the adapter's weights) and every text. The
    batch size and the device are left out: a resume after running out of memory may change them."""
    return settings.with_(batch_size=1, device="cpu").texts_fingerprint(texts)


def encode_rows(enc, settings, texts: list[str]) -> list[dict]:
    """One output row per text: text, rationale, embedding and (with rationales) how far the
    rationale moved it (``analysis.effect``'s shift: the Map colours and filters by it)."""
    from analysis.effect import measure

    results = enc.encode(texts, settings, return_details=True)
    rows = [{"text": r.text, "rationale": r.rationale, "embedding": [round(float(x), 7) for x in r.embedding]}
            for r in results]
    measured = measure(enc, settings, texts, results)
    if measured is not None:
        for row, s in zip(rows, measured[0]):
            row["shift"] = round(float(s), 7)
    return rows


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..files.chunked import ChunkedOutput
    from ..files.textio import read_texts
    from ..model.loading import load_encoder

    settings = encode_settings(args)
    texts = read_texts(args.input)
    out = ChunkedOutput(args.output, fingerprint=fingerprint(settings, texts), total=len(texts),
                        chunk_size=args.chunk_size)  # refused before the model loads when it cannot resume
    done = set(out.done())
    if done:
        print(f"resuming: {len(done)} of {out.n_chunks} chunks were written before ({out.parts})", file=sys.stderr)
    enc = load_encoder(settings) if len(done) < out.n_chunks else None
    step = max(1, settings.batch_size)
    with tqdm(total=len(texts), initial=sum(out.span(i)[1] - out.span(i)[0] for i in done), unit="text",
              desc="encode", file=sys.stderr, dynamic_ncols=True) as bar:
        for i in range(out.n_chunks):
            if i in done:
                continue
            a, b = out.span(i)
            rows = []
            for s in range(a, b, step):  # the bar (and its ETA) moves each batch, not each chunk
                rows += encode_rows(enc, settings, texts[s:min(b, s + step)])
                bar.update(min(b, s + step) - s)
            out.write(i, rows)
    out.finish()
    print(f"wrote {len(texts)} embeddings to {args.output}", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = add_command(sub, "encode", help="embed the texts of a file (with their rationales)", settings=True,
                    description="Embed each text of a .txt (one per line) or .jsonl ('text' field) file; "
                                "writes one JSON object per text: text, rationale, embedding and shift (how far "
                                "the rationale moved the embedding: 1 - cos with and without it). Works in chunks "
                                "kept beside the output (OUTPUT.parts/): run the same command again after an "
                                "interruption and it goes on from the last finished chunk.")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl with a 'text' field")
    p.add_argument("--output", required=True, help="output .jsonl (written only when every text succeeded)")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK,
                   help=f"texts per resumable chunk (default {DEFAULT_CHUNK})")
    p.set_defaults(func=run)
