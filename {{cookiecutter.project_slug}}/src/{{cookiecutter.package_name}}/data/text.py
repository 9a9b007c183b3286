"""Text for causal language modelling: a local .txt or .jsonl file, tokenized and packed into blocks.

With no file given it uses the small corpus shipped with the package; with no
tokenizer given it trains a byte-level BPE tokenizer on the corpus (offline).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import TensorDataset

from {{ cookiecutter.package_name }}.data.common import DataInfo, DataModule, seeded_split, take_fraction
from {{ cookiecutter.package_name }}.data.rules import DATA
from {{ cookiecutter.package_name }}.errors import UserError, at_least, check_arguments, check_value

log = logging.getLogger(__name__)

SAMPLE_CORPUS = Path(__file__).with_name("sample_corpus.txt")
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}


def read_documents(path: Path, text_field: str = "text") -> list[str]:
    """Paragraphs of a .txt file (split on blank lines) or the ``text_field`` of each .jsonl line."""
    if not path.is_file():
        raise UserError(
            f"data.path={path}: no such file; give a .txt or .jsonl file, or data.path=null for the sample corpus."
        )
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                documents.append(str(json.loads(line)[text_field]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(
                    f"{path}:{number} is not a JSON object with a {text_field!r} field: fix the line "
                    "or set data.text_field."
                ) from None
    elif path.suffix == ".txt":
        documents = [part.strip() for part in text.split("\n\n")]
    else:
        raise UserError(f"data.path={path}: unsupported file type {path.suffix!r}; use a .txt or .jsonl file.")
    documents = [document for document in documents if document]
    if not documents:
        raise UserError(f"data.path={path} holds no text: give a file with some.")
    return documents


def train_tokenizer(documents: list[str], vocab_size: int = 512, extra_special_tokens: Sequence[str] = ()) -> Any:
    """A byte-level BPE tokenizer trained on ``documents``, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *extra_special_tokens],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(documents, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    if extra_special_tokens:
        fast.add_special_tokens({"additional_special_tokens": list(extra_special_tokens)})
    return fast


def load_tokenizer(name_or_path: str, revision: str | None = None, trust_remote_code: bool = False) -> Any:
    """The tokenizer saved with a model (a folder or a hub id), with a pad token."""
    from transformers import AutoTokenizer

    from {{ cookiecutter.package_name }}.data.hf_source import resolve_source

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_source(name_or_path, revision), revision=revision, trust_remote_code=trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def pack(documents: list[str], tokenizer: Any, block_size: int) -> torch.Tensor:
    """Tokenize, join documents with EOS and cut into (blocks, block_size); the tail is dropped."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for document in documents:
        ids += tokenizer(document, add_special_tokens=False)["input_ids"]
        if eos is not None:
            ids.append(eos)
    blocks = len(ids) // block_size
    if blocks < 3:
        raise UserError(
            f"the text gives only {len(ids)} tokens, fewer than 3 blocks of data.block_size={block_size}: "
            "use more text or a smaller block_size."
        )
    return torch.tensor(ids[: blocks * block_size], dtype=torch.long).view(blocks, block_size)


BLOCK_SIZE = at_least(2)  # what data.block_size accepts: a block holds an input and the token after it


class TextDataModule(DataModule):
    """Blocks of ``block_size`` token ids; a batch is a LongTensor (batch, block_size)."""

    def __init__(
        self,
        path: str | None = None,
        tokenizer: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        text_field: str = "text",
        block_size: int = 64,
        vocab_size: int = 512,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        subset_fraction: float = 1.0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction, "subset_fraction": subset_fraction}
        check_arguments("data", DATA, fractions)
        check_value("data.block_size", block_size, BLOCK_SIZE)
        self.path = Path(path).expanduser() if path else SAMPLE_CORPUS
        self.tokenizer_source, self.revision = tokenizer, revision
        self.trust_remote_code, self.text_field = trust_remote_code, text_field
        self.block_size, self.vocab_size = block_size, vocab_size
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        self.subset_fraction = subset_fraction

    def setup(self) -> DataInfo:
        documents = read_documents(self.path, self.text_field)
        if self.tokenizer_source:
            tokenizer = load_tokenizer(self.tokenizer_source, self.revision, self.trust_remote_code)
        else:
            tokenizer = train_tokenizer(documents, self.vocab_size)
        blocks = pack(documents, tokenizer, self.block_size)
        train, val, test = seeded_split(len(blocks), [self.val_fraction, self.test_fraction], self.seed)
        train = take_fraction(train, self.subset_fraction)
        self.train_set, self.val_set, self.test_set = (TensorDataset(blocks[part]) for part in (train, val, test))
        self.collate_fn = stack_blocks
        log.info(
            "Text: %d documents from %s -> %d blocks of %d tokens (vocabulary %d).",
            len(documents),
            self.path,
            len(blocks),
            self.block_size,
            len(tokenizer),
        )
        self.info = DataInfo(tokenizer=tokenizer)
        return self.info


def stack_blocks(items: list[tuple[torch.Tensor]]) -> torch.Tensor:
    """Collate ``TensorDataset`` items into one (batch, block_size) tensor."""
    return torch.stack([item[0] for item in items])
