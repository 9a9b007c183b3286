"""Per-pair DPO loss and rewards of a rendered project's task=dpo against trl.DPOTrainer's, as JSON.

Run by tests/test_trl_parity.py in a subprocess, with the render's ``src`` on PYTHONPATH:
``python dpo_parity_check.py <package> <work folder>``. Prints
{"<format>/<reference>": [[ours...], [trl...]], ...} with loss, rewards/chosen, rewards/rejected per pair.

The standard format's strings: the project renders them with the chat template (as data=chat does), TRL
takes them as plain text and appends EOS. So TRL is given the same conversations rendered to text, with
a template that ends the answer at EOS, which makes both sides see the same tokens.
"""

from __future__ import annotations

import copy
import importlib
import json
import sys
from pathlib import Path

import torch

BETA = 0.1
# ChatML whose assistant turn ends at <|im_end|> (EOS, which TRL appends to standard answers)
TEMPLATE = (
    "{" + "% for m in messages %" + "}<|im_start|>{" + "{ m['role'] }" + "}\n{" + "{ m['content'] }" + "}<|im_end|>"
    "{" + "% if m['role'] != 'assistant' %" + "}\n{" + "% endif %" + "}{" + "% endfor %" + "}"
    "{" + "% if add_generation_prompt %" + "}<|im_start|>assistant\n{" + "% endif %" + "}"
)


def rows_and_pairs(preference, tokenizer, fmt: str) -> tuple[list[dict], list[dict]]:
    """Our rows (as a user writes them) and TRL's rows for the first 12 sample pairs, both in ``fmt``."""
    source = preference.PreferenceDataModule(vocab_size=400)
    pairs = source.read_pairs()[0][:12]
    if fmt == "conversational":
        rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
        return rows, rows
    ours = [{"prompt": p.prompt[-1]["content"], "chosen": p.chosen[0]["content"],
             "rejected": p.rejected[0]["content"]} for p in pairs]
    theirs = [{"prompt": tokenizer.apply_chat_template([{"role": "user", "content": row["prompt"]}], tokenize=False,
                                                       add_generation_prompt=True),
               "chosen": row["chosen"], "rejected": row["rejected"]} for row in ours]
    return ours, theirs


def main(package: str, work: Path) -> dict[str, list[list[list[float]]]]:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, LlamaConfig
    from trl import DPOConfig, DPOTrainer

    preference = importlib.import_module(f"{package}.data.preference")
    dpo = importlib.import_module(f"{package}.tasks.dpo")
    source = preference.PreferenceDataModule(vocab_size=400)
    pairs = source.read_pairs()[0]
    tokenizer = source.make_tokenizer([(p.prompt + p.chosen + p.rejected, 0) for p in pairs])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    result = {}
    for fmt in ("standard", "conversational"):
        for kind in ("copy", "adapters"):
            work_tokenizer = copy.deepcopy(tokenizer)
            if fmt == "standard":
                work_tokenizer.chat_template = TEMPLATE
            ours_rows, trl_rows = rows_and_pairs(preference, work_tokenizer, fmt)
            file = work / f"{fmt}.jsonl"
            file.write_text("".join(json.dumps(row) + "\n" for row in ours_rows), encoding="utf-8")
            torch.manual_seed(0)  # fresh models for each case: TRL's trainer changes the ones it is given
            reference = AutoModelForCausalLM.from_config(config).eval()
            policy = copy.deepcopy(reference)
            with torch.no_grad():  # a policy that has moved away from its reference
                for parameter in policy.parameters():
                    parameter.add_(0.05 * torch.randn_like(parameter))
            args = DPOConfig(output_dir=str(work / f"{fmt}-{kind}"), report_to=[], beta=BETA, max_length=None,
                             per_device_train_batch_size=1, use_cpu=True, dataset_num_proc=None)
            options = ({"model": policy, "ref_model": reference} if kind == "copy" else  # TRL adds the adapters
                       {"model": copy.deepcopy(reference), "peft_config": LoraConfig(
                           r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0,
                           task_type="CAUSAL_LM")})
            trainer = DPOTrainer(args=args, train_dataset=Dataset.from_list(trl_rows),
                                 processing_class=work_tokenizer, **options)
            model = trainer.model.eval()
            if kind == "adapters":  # adapters that have learned something: the policy differs from its reference
                torch.manual_seed(1)
                with torch.no_grad():
                    for name, parameter in model.named_parameters():
                        if "lora_B" in name:
                            parameter.add_(0.2 * torch.randn_like(parameter))
            task = dpo.DPOTask(beta=BETA, reference=kind)
            data = preference.PreferenceDataModule(path=str(file), max_length=4096, max_prompt_length=None,
                                                   val_fraction=0.0, test_fraction=0.0)
            data.make_tokenizer = lambda _, t=work_tokenizer: t
            info = data.setup()
            assert info.report["format"] == fmt, info.report
            task.bind(info)
            task.attach(reference if kind == "copy" else model)
            ours = []
            with torch.no_grad():
                for example in sorted(data.examples["train"], key=lambda item: item["index"]):
                    scores = task.scores(model, data.collate_fn([example]))
                    ours.append([float(scores[key][0]) for key in ("loss", "rewards/chosen", "rewards/rejected")])
            theirs = []
            with torch.no_grad():
                for index in range(len(trl_rows)):
                    batch = trainer.data_collator([trainer.train_dataset[index]])
                    loss = float(trainer.compute_loss(trainer.model, batch))
                    metrics = trainer._metrics["eval" if not trainer.model.training else "train"]
                    theirs.append([loss, metrics["rewards/chosen"][-1], metrics["rewards/rejected"][-1]])
            result[f"{fmt}/{kind}"] = [ours, theirs]
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], Path(sys.argv[2]))))
