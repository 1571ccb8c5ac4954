"""`mitigation=repnoise` (Rosati et al., arXiv 2405.14577), an alignment-stage defense: representation noising. It
trains on pairs, a harmful request answered harmfully (`harmful_data`) and the same request refused (`data`), so
that the model keeps refusing while its internal representation of harmful answers turns into noise, leaving a later
harmful fine-tune little to build on. Per step, on a batch of refusals and the harmful halves of the same pairs:

    L = CE(refusals) + beta * mean_l MMD(m * h_l, m * N(0, I)) - alpha * log(S / (L + 1) + 1)

- h_l: the output of decoder layer l's MLP on the harmful batch; m: the harmful answer's tokens where the pair's
  inputs differ (the requests are the same, so that is where the answers part); N(0, I): Gaussian noise of h_l's
  shape, masked alike. MMD: a mixture of 5 Gaussian kernels (bandwidths the mean pairwise squared distance times
  2^-2 .. 2^2) between the per-example flattened states, the biased estimate mean(K_xx + K_yy - K_xy - K_yx).
- S: the cross-entropy of the harmful answer (at the positions of m) read out of every hidden state through the
  final norm and the LM head (the logit lens): the L + 1 hidden states from the embeddings to the last layer, whose
  read-out is the model's own prediction. -alpha * log(S / (L + 1) + 1) ascends it, boundedly.

Source: domenicrosati/representation-noising representation_noising/loss.py (beta 0.001, alpha 1; demo notebook
lr 1e-4, 1 epoch). Huang et al.'s reimplementation (git-disl/Booster loss_func/repnoise_loss.py, script/alignment/
repNoise.sh): alpha 0.1, beta 0.001, lr 5e-4 constant, 20 epochs, batch 5, LoRA r 32, alpha 4 on q,k,v.

Where fts departs from that code (same terms): the refusal CE is fts's answer-only loss (the original masks it to
the differing positions, with a shift that zeroes the logits of the first one); the log term averages the L + 1
read-outs (the original adds the final logits once more, and normalises the already normalised last state again);
the logit lens is computed at the masked positions only (the original computes the whole vocabulary at every
position, then masks), which gives the same loss for a fraction of the memory; padding is never "different" (the
original compares padded ids, so a padded refusal marks the harmful answer's padding too); pairs are matched by
their request (the prompt tokens), not by position in two loaders.
Cost: 2 forward + 1 backward per step, plus L + 1 LM-head read-outs of the harmful answer tokens, each one's
[tokens x vocabulary] log-probabilities held until the backward.
"""

import json
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fts.core.errors import DataError
from fts.core.records import Example
from fts.train.defenses import Objective
from fts.train.defenses.hardening import HarmfulHardening, recorded_outputs
from fts.train.defenses.reference import plain_inputs
from fts.train.trainer import Trainer


@dataclass
class RepNoise(HarmfulHardening):
    alpha: float = 1.0  # the harmful read-out's ascent (the paper's; Huang et al.'s reimplementation: 0.1)
    beta: float = 0.001  # the noise term (both)
    name: str = "repnoise"

    def pairs(self) -> list[tuple[Example, Example]]:
        """(harmful, refusal) of the same request: each request of `harmful_data` (once) with its refusal in
        `data`. A harmful request without a refusal is an error: RepNoise trains on pairs."""
        refusals = {request(ex): ex for ex in super().alignment_examples()}
        harmful = {}
        for ex in self.harmful_examples():
            harmful.setdefault(request(ex), ex)
        unpaired = [ex for key, ex in harmful.items() if key not in refusals]
        if unpaired:
            raise DataError(
                f"mitigation.repnoise: {len(unpaired)} of {len(harmful)} requests of harmful_data have no refusal of "
                f"the same request in mitigation.repnoise.data (the first: "
                f"{unpaired[0]['messages'][-2]['content'][:80]!r}). RepNoise trains on pairs: give `data` the refusals "
                "of harmful_data's requests (the built-in pair: builtin:defense_harmful.jsonl and the alignment split "
                "of builtin:safety.jsonl), or drop the unpaired rows."
            )
        return [(ex, refusals[key]) for key, ex in harmful.items()]

    def alignment_examples(self) -> list[Example]:
        """What the trainer steps through: the refusal of each pair."""
        return [refusal for _, refusal in self.pairs()]

    def objective(self) -> Objective:
        guide = [harmful for harmful, _ in self.pairs()]
        return Objective(RepNoiseTrainer, {"alpha": self.alpha, "beta": self.beta}, guide, self.name)


def request(example: Example) -> str:
    """The turns before the answer: what a harmful example and its refusal share."""
    return json.dumps(example["messages"][:-1], sort_keys=True)


class RepNoiseTrainer(Trainer):
    """Steps through the refusals; each step looks up the harmful half of every pair by its prompt tokens."""

    def __init__(self, *args, guide, alpha: float, beta: float, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.alpha = alpha
        self.beta = beta
        self.harmful = {}
        for row in self.prepared(guide, "harmful"):
            single = self.data_collator([row])
            self.harmful[prompt_key(single, 0)] = row
        self.mlps = [module for name, module in self.model.named_modules() if name.endswith(".mlp")]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        refusal_loss = super().compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        if not model.training:
            return refusal_loss
        harmful = self.paired_batch(inputs)
        mask = differing_answer(harmful, inputs)
        with recorded_outputs(self.mlps) as states:
            out = model(**plain_inputs(harmful), output_hidden_states=True, logits_to_keep=1)
        noise = torch.stack([masked_mmd(h, mask) for h in states]).mean()
        readout = lens_cross_entropies(model, out.hidden_states, harmful["input_ids"], mask).mean()  # S / (L + 1)
        self._metrics["train"]["repnoise_noise_mmd"].append(noise.item())
        self._metrics["train"]["repnoise_harmful_ce"].append(readout.item())
        terms = self.beta * noise - self.alpha * torch.log(readout + 1)
        return refusal_loss + terms * self.accumulation_share(num_items_in_batch)

    def paired_batch(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The harmful halves of the batch's pairs, in its order, collated like it."""
        keys = [prompt_key(inputs, row) for row in range(inputs["input_ids"].shape[0])]
        missing = sum(key not in self.harmful for key in keys)
        if missing:
            raise RuntimeError(
                f"RepNoise: {missing} refusals of the batch have no harmful pair (pairs are made first)"
            )
        return self._prepare_inputs(self.data_collator([self.harmful[key] for key in keys]))

    def accumulation_share(self, num_items_in_batch) -> float:
        """What puts a per-micro-batch term on the scale of the answer loss: TRL divides that by the answer tokens
        of the whole accumulation window (`num_items_in_batch`), and the Trainer then leaves it as it is."""
        if self.model_accepts_loss_kwargs and num_items_in_batch is not None:
            return 1 / self.current_gradient_accumulation_steps
        return 1.0


def prompt_key(batch: dict[str, torch.Tensor], row: int) -> tuple[int, ...]:
    """A collated row's prompt tokens (the attended positions without a label)."""
    prompt = (batch["labels"][row] == -100) & (batch["attention_mask"][row] == 1)
    return tuple(batch["input_ids"][row][prompt].tolist())


def differing_answer(harmful: dict[str, torch.Tensor], refusal: dict[str, torch.Tensor]) -> torch.Tensor:
    """m [batch, harmful length]: the harmful answer's tokens where the pair's inputs differ."""
    length = harmful["input_ids"].shape[1]
    ids, attended = fitted(refusal["input_ids"], length), fitted(refusal["attention_mask"], length)
    differ = (harmful["input_ids"] != ids) | (harmful["attention_mask"] != attended)
    return differ & (harmful["labels"] != -100) & (harmful["attention_mask"] == 1)


def fitted(tensor: torch.Tensor, length: int) -> torch.Tensor:
    """`tensor` [batch, seq] cut or right-padded with -1 (no token id, no mask value) to `length` columns."""
    if tensor.shape[1] >= length:
        return tensor[:, :length]
    return F.pad(tensor, (0, length - tensor.shape[1]), value=-1)


def masked_mmd(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MMD between the masked states [batch, seq, width] and Gaussian noise masked alike, per example flattened."""
    keep = mask.unsqueeze(-1).to(torch.float32)
    states = hidden.float() * keep
    noise = torch.randn_like(states) * keep
    return mmd(states.flatten(1), noise.flatten(1))


def mmd(x: torch.Tensor, y: torch.Tensor, kernels: int = 5, multiplier: float = 2.0) -> torch.Tensor:
    """The biased estimate of MMD^2 between samples x and y [n, dim] under a mixture of Gaussian kernels whose
    bandwidths are the mean pairwise squared distance (no gradient) times multiplier^(i - kernels // 2)."""
    z = torch.cat([x, y])
    squared = (z * z).sum(1)
    distances = (squared[:, None] + squared[None, :] - 2 * z @ z.T).clamp(min=0)
    count = z.shape[0]
    base = distances.detach().sum() / (count * count - count) / multiplier ** (kernels // 2)
    base = base.clamp(min=1e-12)  # all states alike (nothing masked in): every kernel is 1, the MMD 0
    k = sum(torch.exp(-distances / (base * multiplier**i)) for i in range(kernels))
    n = x.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - k[:n, n:].mean() - k[n:, :n].mean()


def lens_cross_entropies(model, hidden_states: tuple, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[L + 1]: for each hidden state (embeddings .. last layer), the cross-entropy of the masked tokens read out
    through the final norm and the LM head. transformers returns the last state already normalised (it is the one
    the model's own prediction is read from), so the norm is applied to the others only."""
    predicting = mask[:, 1:]  # the state at t predicts token t + 1
    if not predicting.any():  # nothing differs: no term (and no NaN from an empty mean)
        return hidden_states[-1].sum().reshape(1) * 0
    targets = input_ids[:, 1:][predicting]
    norm, head = model.get_decoder().norm, model.get_output_embeddings()
    last = len(hidden_states) - 1
    losses = []
    for k, states in enumerate(hidden_states):
        states = states[:, :-1][predicting]
        losses.append(F.cross_entropy(head(states if k == last else norm(states)).float(), targets))
    return torch.stack(losses)
