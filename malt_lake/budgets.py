"""Token budgets per role: how many new tokens the generator, verifier and refiner may write.

Defaults are per dataset family and sized for real solutions (a GSM8K chain of thought, a
MATH solution, critiques and refinements that quote the whole answer), not for the CPU demo.
The refiner's prompt quotes the question, the answer and the critique, so the longest context
any role sees is the prompt plus all three budgets: training recipes' ``max_length`` and the
vLLM ``max_model_len`` must hold it (``context_tokens``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from malt_lake.names import ROLES

# room for the system prompt, instructions and a long question (tokens)
PROMPT_ALLOWANCE = 512


class TokenBudgets(BaseModel):
    """Most new tokens per sample, per role."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    generator: int = Field(ge=1, le=32_768, description="Generator answer (chain of thought).")
    verifier: int = Field(ge=1, le=32_768, description="Verifier critique.")
    refiner: int = Field(ge=1, le=32_768, description="Refiner's final answer.")

    def for_role(self, role: str) -> int:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return getattr(self, role)

    @classmethod
    def uniform(cls, tokens: int) -> TokenBudgets:
        return cls(generator=tokens, verifier=tokens, refiner=tokens)

    def context_tokens(self, prompt_tokens: int = PROMPT_ALLOWANCE) -> int:
        """The longest sequence any role's sample spans: the refiner's prompt (question,
        answer, critique) plus its own answer."""
        return prompt_tokens + self.generator + self.verifier + self.refiner


FAMILY_BUDGETS: dict[str, TokenBudgets] = {
    # GSM8K chains of thought run 100-400 tokens on 1.5B-8B instruct models
    "numeric": TokenBudgets(generator=512, verifier=512, refiner=512),
    # MATH solutions (and critiques quoting them) often pass 500 tokens
    "math": TokenBudgets(generator=1024, verifier=1024, refiner=1024),
    # a short rationale and a letter; critiques and refinements quote it
    "mcq": TokenBudgets(generator=256, verifier=384, refiner=384),
}


def family_budgets(family: str) -> TokenBudgets:
    try:
        return FAMILY_BUDGETS[family]
    except KeyError:
        raise KeyError(f"no token budgets for family {family!r}; known: "
                       f"{', '.join(sorted(FAMILY_BUDGETS))}") from None
