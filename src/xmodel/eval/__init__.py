"""Evaluation. `agents` – ReAct agent episodes (HotpotQA, FEVER, AlfWorld, WebShop) and Table 4 of Xmodel-2."""
