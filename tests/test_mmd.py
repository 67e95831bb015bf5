"""Magnetic mirror descent (issue 23): the pure loss terms against hand-computed values, the tabular
policy trained through the same functions (MMD reaches Nash where plain policy gradient cycles), the LM
loss's gradient against the hand-derived per-state gradient, the state baseline and the compact prompt."""
from __future__ import annotations

import math
import random

import pyspiel
import pytest
import torch
from open_spiel.python import policy as os_policy
from open_spiel.python.algorithms import exploitability as os_expl

from compose_rl.rl.losses import (aggregate, kl_categorical, legal_log_probs, mmd_alpha, mmd_state_terms,
                                  uniform_log_probs)
from compose_rl.rl.tabular import MMDConfig, TabularGame, TabularPolicy, counterfactual_values


# ------------------------------------------------------------------------------ pure terms by hand
def test_legal_log_probs_and_kl_by_hand():
    # one state, three candidates, the third padding; sequence probs 0.2 and 0.6 -> mass 0.8, p = (1/4, 3/4)
    seq = torch.log(torch.tensor([[0.2, 0.6, 0.1]]))
    legal = torch.tensor([[True, True, False]])
    logp, log_mass = legal_log_probs(seq, legal)
    assert logp.exp()[0, :2].tolist() == pytest.approx([0.25, 0.75])
    assert logp[0, 2].item() == 0.0  # padding stays 0
    assert log_mass.item() == pytest.approx(math.log(0.8))
    rho = uniform_log_probs(legal)
    assert rho[0, :2].exp().tolist() == pytest.approx([0.5, 0.5])
    kl = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert kl_categorical(logp, rho, legal).item() == pytest.approx(kl)
    old = torch.log(torch.tensor([[0.5, 0.5, 1.0]]))
    t = mmd_state_terms(logp, log_mass, legal, rho, alpha=0.2, eta=0.5, old_logp=old, validity=2.0)
    assert t["magnet"].item() == pytest.approx(0.2 * kl)
    assert t["prox"].item() == pytest.approx(kl / 0.5)
    assert t["validity"].item() == pytest.approx(-2.0 * math.log(0.8))
    assert t["loss"].item() == pytest.approx(0.2 * kl + 2 * kl - 2 * math.log(0.8))
    # without eta/old the proximal term is 0
    assert mmd_state_terms(logp, log_mass, legal, rho, 0.2)["prox"].item() == 0.0


def test_mmd_alpha_schedules():
    assert mmd_alpha(0.2, 500, "constant", 10.0) == 0.2
    assert mmd_alpha(0.2, 0, "inv_sqrt", 10.0) == 0.2
    assert mmd_alpha(0.2, 30, "inv_sqrt", 10.0) == pytest.approx(0.1)  # 0.2 / sqrt(4)
    with pytest.raises(ValueError, match="alpha_schedule"):
        mmd_alpha(0.2, 1, "cosine", 10.0)


def test_seq_sum_aggregation_by_hand():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # per sequence: 3 and 15 -> mean 9 (seq_mean would give (1.5 + 5) / 2 = 3.25)
    assert aggregate(per_token, mask, "seq_sum").item() == pytest.approx(9.0)
    assert aggregate(per_token, mask, "seq_mean").item() == pytest.approx(3.25)


# ------------------------------------------------------------------------------ tabular: the same losses reach Nash
def _exploitability(tg: TabularGame, pol: TabularPolicy) -> float:
    tab = os_policy.TabularPolicy(tg.game)
    for key, probs in tg.tables(pol.probs()).items():
        row = tab.state_lookup[key]
        for a, p in probs.items():
            tab.action_probability_array[row][a] = p
    return float(os_expl.exploitability(tg.game, tab))


def _matching_pennies():
    return pyspiel.convert_to_turn_based(pyspiel.load_game("matrix_mp"))


def test_counterfactual_values_by_hand_on_matching_pennies():
    tg = TabularGame.build(_matching_pennies())
    assert len(tg.keys) == 2
    # player 0 plays heads with 0.8, player 1 with 0.3; matching pennies pays player 0 +1 on a match
    probs = torch.zeros(2, 2, dtype=torch.float64)
    p0, p1 = tg.index[tg.keys[0]], tg.index[tg.keys[1]]
    probs[p0] = torch.tensor([0.8, 0.2])
    probs[p1] = torch.tensor([0.3, 0.7])
    q = counterfactual_values(tg, probs)
    # player 0: q(H) = 0.3 - 0.7 = -0.4, q(T) = 0.4; player 1 (reach of p0's move): q(H) = -(0.8 - 0.2), q(T) = +0.6
    assert q[p0].tolist() == pytest.approx([-0.4, 0.4])
    assert q[p1].tolist() == pytest.approx([-0.6, 0.6])


@pytest.mark.parametrize("game,lr,alpha,iters", [("matching_pennies", 0.5, 0.2, 300), ("kuhn_poker", 5.0, 0.05, 600)])
def test_mmd_converges_where_policy_gradient_does_not(game, lr, alpha, iters):
    # the step size is per game (Kuhn's counterfactual values are ~6x smaller: chance deals 6 hands)
    g = _matching_pennies() if game == "matching_pennies" else pyspiel.load_game("kuhn_poker")
    tg = TabularGame.build(g)
    pg, mmd = TabularPolicy(tg, lr=lr), TabularPolicy(tg, lr=lr)
    cfg = MMDConfig(alpha=alpha, magnet="moving", magnet_rate=0.05)
    for _ in range(iters):
        pg.exact_step(None)
        mmd.exact_step(cfg)
    e_pg, e_mmd = _exploitability(tg, pg), _exploitability(tg, mmd)
    assert e_mmd < 0.01, e_mmd
    assert e_pg > 0.05, e_pg  # the last iterate of plain policy gradient cycles around Nash


def test_constant_uniform_magnet_stops_at_the_regularised_equilibrium():
    # alpha 0.05 to a fixed uniform magnet: converges, but to a QRE at positive exploitability
    tg = TabularGame.build(pyspiel.load_game("kuhn_poker"))
    pol = TabularPolicy(tg, lr=5.0)
    for _ in range(600):
        pol.exact_step(MMDConfig(alpha=0.05, magnet="uniform"))
    assert 0.02 < _exploitability(tg, pol) < 0.1


def test_proximal_term_acts_only_from_the_second_inner_step():
    tg = TabularGame.build(_matching_pennies())
    a, b = TabularPolicy(tg, lr=1.0, seed=3), TabularPolicy(tg, lr=1.0, seed=3)
    a.exact_step(MMDConfig(alpha=0.1, eta=None, magnet="uniform"))
    b.exact_step(MMDConfig(alpha=0.1, eta=0.01, magnet="uniform"))
    assert torch.allclose(a.logits, b.logits, rtol=0, atol=1e-12)  # one step: KL(p || p_old) has zero gradient at p = p_old
    a2, b2 = TabularPolicy(tg, lr=0.2, seed=3), TabularPolicy(tg, lr=0.2, seed=3)
    a2.exact_step(MMDConfig(alpha=0.1, eta=None, magnet="uniform"), inner_steps=3)
    b2.exact_step(MMDConfig(alpha=0.1, eta=0.5, magnet="uniform"), inner_steps=3)
    # a strong proximal term holds the policy near p_old: it moves less
    start = TabularPolicy(tg, lr=0.2, seed=3).logits
    assert (b2.logits - start).abs().sum() < 0.9 * (a2.logits - start).abs().sum()


def test_sampled_tabular_mmd_learns_kuhn():
    # the sample-efficiency reference: 64 sampled games per step, the LM learner's loss shape
    tg = TabularGame.build(pyspiel.load_game("kuhn_poker"))
    pol = TabularPolicy(tg, lr=1.0)
    rng = random.Random(0)
    start = _exploitability(tg, pol)
    for _ in range(200):
        pol.sampled_step(64, rng, MMDConfig(alpha=0.3, magnet="moving", magnet_rate=0.05))
    # sampling noise keeps it above the exact version's floor (0.05-0.1 after 1000 steps of 64 games)
    assert start > 0.4 and _exploitability(tg, pol) < 0.15


def test_train_sampled_follows_the_lm_lr_schedule_and_counts_games():
    from compose_rl.rl.tabular import train_sampled

    tg = TabularGame.build(pyspiel.load_game("kuhn_poker"))
    pol, curve = train_sampled(tg, 8, 10, MMDConfig(alpha=0.5, magnet="moving"), seed=1, lr=4.0,
                               lr_schedule="linear_tail", every=5)
    # the last step ran at lr 4 x 0.1 (linear_tail's end), and the curve is at 0, 40 and 80 sampled games
    assert pol.opt.param_groups[0]["lr"] == pytest.approx(0.4)
    assert [g for g, _ in curve] == [0.0, 40.0, 80.0]
    assert curve[-1][1] == pytest.approx(_exploitability(tg, pol))
    _, same = train_sampled(tg, 8, 10, MMDConfig(alpha=0.5, magnet="moving"), seed=1, lr=4.0,
                            lr_schedule="linear_tail")
    assert same == [curve[0], curve[-1]]  # seeded: the same run, only the end point without `every`


# ------------------------------------------------------------------------------ the LM loss's gradient
def test_lm_mmd_gradient_equals_the_hand_derived_per_state_gradient(tiny_policy):
    from compose_rl.rl.learner import _mmd_exact, legal_answer_table
    from compose_rl.types import Sample
    from games import get_game

    game = get_game("kuhn_poker")
    state = game.openspiel_game.new_initial_state()
    state.apply_action(2)
    state.apply_action(0)  # player 0 holds the King
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    prompt = tok(tiny_policy.format_prompt(game.prompt(state, 0)), add_special_tokens=False)["input_ids"]
    legal = [game.answer_text(state, a) for a in state.legal_actions()]
    batch = [Sample(prompt_ids=prompt, completion_ids=[1], old_logprobs=[0.0], reward=1.0,
                    info={"legal_answers": legal})]
    cfg = MMDConfig(alpha=0.3, eta=None, magnet="uniform", validity=1.5)
    params = [p for p in model.parameters() if p.requires_grad]

    table = legal_answer_table(model, tok, batch, pad=0)
    loss = _mmd_exact(table, cfg, 0.3, None, tok, batch, 0, {}, {})
    auto = torch.autograd.grad(loss, params)

    # by hand: with l_a = log pi(y_a | s), p = softmax(l) over the legal answers, rho uniform,
    # d/dl_a [alpha KL(p || rho) - v log sum_b exp l_b] = alpha p_a (log(p_a / rho_a) - KL) - v p_a
    _, seq, _, _ = legal_answer_table(model, tok, batch, pad=0)
    seq = seq[0]
    p = torch.softmax(seq.detach(), -1)
    kl = float((p * torch.log(p * len(p))).sum())
    coef = [0.3 * float(p[a]) * (math.log(float(p[a]) * len(p)) - kl) - 1.5 * float(p[a]) for a in range(len(p))]
    grads = [torch.autograd.grad(seq[a], params, retain_graph=True) for a in range(len(p))]
    for k, g in enumerate(auto):
        hand = sum(c * gr[k] for c, gr in zip(coef, grads))
        assert torch.allclose(g, hand, atol=1e-6, rtol=1e-4)


def test_legal_answer_table_shares_prefixes_with_the_same_values_and_gradients(tiny_policy):
    """The table encodes each state's prompt once (and the batch's common rules text once) with the graph
    kept; its log-probs and their gradient equal scoring every (state, answer) row in full."""
    from compose_rl.rl.learner import legal_answer_table
    from compose_rl.rl.logprobs import completion_logprobs
    from compose_rl.types import Sample
    from games import get_game
    from games.base import random_decision_states

    game = get_game("leduc_poker")
    tok, model = tiny_policy.tokenizer, tiny_policy.model
    batch, states = [], []
    for state, p in random_decision_states(game, 6, seed=3, plies=(2, 5)):  # prompts of different lengths
        prompt = tok(tiny_policy.format_prompt(game.prompt(state, p)), add_special_tokens=False)["input_ids"]
        legal = [game.answer_text(state, a) for a in state.legal_actions()]
        batch.append(Sample(prompt_ids=prompt, completion_ids=[1], old_logprobs=[0.0], reward=0.0,
                            info={"legal_answers": legal}))
        states.append((tuple(prompt), legal))
    assert len({len(p) for p, _ in states}) > 1 and len(batch) >= 3
    model.train()
    params = [q for q in model.parameters() if q.requires_grad]
    keys, seq, legal, visits = legal_answer_table(model, tok, batch, pad=0)
    prompts, comps, cells = [], [], []
    for k, (prompt, answers) in enumerate(dict(states).items()):
        for j, text in enumerate(answers):
            prompts.append(list(prompt))
            comps.append(tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
            cells.append((k, j))
    logp, mask = completion_logprobs(model, prompts, comps, pad=0)
    full = (logp * mask).sum(-1)
    shared = torch.stack([seq[k, j] for k, j in cells])
    assert keys == list(dict(states)) and int(legal.sum()) == len(cells)
    assert torch.allclose(shared, full, atol=1e-4)
    w = torch.linspace(-1.0, 2.0, len(cells))  # any weighting of the cells: gradients agree
    g_shared = torch.autograd.grad((w * shared).sum(), params)
    g_full = torch.autograd.grad((w * full).sum(), params)
    for a, b in zip(g_shared, g_full):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-3)


# ------------------------------------------------------------------------------ state baselines
def test_state_baseline_by_hand():
    from compose_rl.rl.advantages import RoleBaselines

    b = RoleBaselines(decay=0.5)
    # two games; p0 holds K (state "K") in both, p1 holds J then Q
    rewards = [1.0, -1.0, 2.0, -2.0]
    a = b.advantages(rewards, ["kuhn"] * 4, [0, 1, 0, 1], [0, 0, 1, 1], states=["K", "J", "K", "Q"])
    assert a == [1.0, -1.0, 2.0, -2.0]  # every baseline starts at 0 and is read before the batch
    # K: 0.5*0 + 0.5*1 = 0.5 -> 0.5*0.5 + 0.5*2 = 1.25; J: -0.5; Q: -1
    assert b.values == pytest.approx({"kuhn/p0/K": 1.25, "kuhn/p1/J": -0.5, "kuhn/p1/Q": -1.0})
    a2 = b.advantages([0.0], ["kuhn"], [0], [2], states=["K"])
    assert a2 == [-1.25]


# ------------------------------------------------------------------------------ compact prompt
def test_compact_prompt_drops_rules_and_keeps_the_card_last():
    from compose_rl.models import Policy
    from games import GAMES, get_game
    from games.base import prompt_rewrites

    game = get_game("kuhn_poker")
    state = game.openspiel_game.new_initial_state()
    state.apply_action(0)
    state.apply_action(2)
    state.apply_action(1)  # player 0 bet; player 1 (holding K) to act
    full = game.prompt(state, 1)
    rewrites = prompt_rewrites("boxed", "compact", GAMES.values())
    compact = full
    for old, new in rewrites:
        compact = compact.replace(old, new)
    assert compact == "Actions: pass, bet.\nHistory: Opponent bet. Pot: 3.\nYour card: K"
    assert "J<Q<K" in full and "J" not in compact and "Q" not in compact  # the rules named every card
    # reason mode keeps its instruction; the full style changes nothing in boxed mode
    assert prompt_rewrites("boxed", "full", GAMES.values()) == ()
    reason = prompt_rewrites("reason", "compact", GAMES.values())
    text = full
    for old, new in reason:
        text = text.replace(old, new)
    assert "Think step by step" in text and game.rules not in text
    assert Policy  # the rewrites are applied by Policy.format_prompt


def test_lr_schedule_linear_tail_by_hand():
    from compose_rl.rl.losses import lr_factor

    assert [lr_factor("constant", s, 10) for s in (0, 9)] == [1.0, 1.0]
    # 10 steps: 1 for steps 0-4, then 1 - 0.9 (s - 5) / 4 -> 1, 0.775, 0.55, 0.325, 0.1
    assert [lr_factor("linear_tail", s, 10) for s in range(10)] == pytest.approx(
        [1, 1, 1, 1, 1, 1.0, 0.775, 0.55, 0.325, 0.1])
    assert lr_factor("linear_tail", 0, 1) == 1.0
    # warmup 4: (s + 1) / 4 for s = 0..3, then the schedule; it multiplies the tail too
    assert [lr_factor("constant", s, 10, warmup=4) for s in range(6)] == pytest.approx([0.25, 0.5, 0.75, 1, 1, 1])
    assert lr_factor("linear_tail", 6, 10, warmup=20) == pytest.approx(7 / 20 * 0.775)


def test_uniform_stage1_labels_carry_no_card_information():
    from collections import Counter

    from compose_rl.domains.games import GameDomain
    from compose_rl.recipe import GamesCfg

    def label_mix(kind):
        cfg = GamesCfg(train=[{"name": "kuhn_poker"}], stage1_labels=kind)
        counts = Counter((p.split("Your card: ")[-1], c) for p, c in GameDomain(cfg, seed=0).sft_pairs(3000))
        return {card: counts[(card, "\\boxed{bet}")] / (counts[(card, "\\boxed{bet}")] + counts[(card, "\\boxed{pass}")])
                for card in "JQK"}

    uniform, code = label_mix("uniform"), label_mix("code")
    assert all(abs(v - 0.5) < 0.05 for v in uniform.values()), uniform
    # the code maps each card to one action 75% of the time: far from 1/2 for every card
    assert all(abs(v - 0.5) > 0.3 for v in code.values()), code


def test_infostate_stage1_labels_read_the_history_as_well_as_the_card():
    # `infostate` keys the code on card and betting history: seed 0's code (drawn once, printed below)
    # bets with the Jack as first player but passes it after "pass, bet"; the `code` labels cannot differ there
    from collections import Counter

    from compose_rl.domains.game_labels import label_code_map, label_policy_tables
    from compose_rl.domains.games import GameDomain
    from compose_rl.evals.games import infostate_rows
    from compose_rl.recipe import GamesCfg
    from games import get_game

    kuhn = get_game("kuhn_poker")
    code = {k.split(" | ")[1]: v["pass,bet"] for k, v in label_code_map(kuhn, 0, "infostate").items()}
    assert code == {"0": "bet", "0b": "pass", "0p": "pass", "0pb": "bet", "1": "bet", "1b": "bet", "1p": "pass",
                    "1pb": "pass", "2": "bet", "2b": "bet", "2p": "pass", "2pb": "pass"}
    # the label policy plays the code 75% + half of the uniform 25%: 0.875 on the code's action
    rows = {r["key"]: r["probs"] for r in infostate_rows(kuhn, label_policy_tables(kuhn, 0, 0.75, "infostate"))}
    assert rows["0"]["bet"] == pytest.approx(0.875) and rows["0pb"]["bet"] == pytest.approx(0.875)
    assert rows["0p"]["bet"] == pytest.approx(0.125)

    def jack_bet_rate(kind, history):
        cfg = GamesCfg(train=[{"name": "kuhn_poker"}], stage1_labels=kind, prompt="compact")
        pairs = [(p, c) for p, c in GameDomain(cfg, seed=0).sft_pairs(4000)
                 if p.rstrip().endswith("Your card: J") and history in p]
        counts = Counter(c for _, c in pairs)
        return counts["\\boxed{bet}"] / len(pairs)

    first, after_pass_bet = "History: none, you act first.", "History: You passed. Opponent bet."
    assert jack_bet_rate("infostate", first) > 0.8 and jack_bet_rate("infostate", after_pass_bet) > 0.8
    assert jack_bet_rate("infostate", "History: Opponent passed.") < 0.2
    with pytest.raises(ValueError, match="use one of"):
        label_code_map(kuhn, 0, "card")


def test_context_check_counts_the_compact_prompt_the_policy_sees(capsys):
    # the window check formats prompts through the same rewrites as the pipeline: compact Kuhn prompts
    # are far shorter than the full ones, and the boundary is exact for each style
    from compose_rl.cli import main
    from compose_rl.fit import longest_prompt
    from compose_rl.recipe import load_recipe

    path = "recipes/spiral-kuhn.yaml"
    over = ["games.held_out=[]"]
    compact = longest_prompt(load_recipe(path, over), len).prompt_tokens
    full = longest_prompt(load_recipe(path, over + ["games.prompt=full"]), len).prompt_tokens
    assert compact < full - 100
    need = compact + 16
    assert main(["validate", path, *over, f"model.tiny.max_position_embeddings={need}"]) == 0
    capsys.readouterr()
    assert main(["validate", path, *over, f"model.tiny.max_position_embeddings={need - 1}"]) == 2
    assert f"= {need}" in capsys.readouterr().err


@pytest.mark.parametrize("micro", [1, 3])
def test_mmd_exact_terms_accumulate_the_unsplit_gradient(tiny_policy, micro):
    # with distinct states, the per-state MMD terms summed over micro-batches (each scaled by its share of
    # the minibatch's states) give the one-pass minibatch's gradient; p_old rows are sliced to each
    # micro-batch's legal width
    import contextlib

    from compose_rl.rl.learner import MMDStep, accumulate_gradients, legal_answer_table
    from tests.test_learner import _rl_cfg
    from tests.test_scale import _samples

    tok, model = tiny_policy.tokenizer, tiny_policy.model
    samples = [s for i, s in enumerate(_samples(tok, legal=True)) if i != 6]  # index 6 repeats prompt "K"
    assert len({tuple(s.prompt_ids) for s in samples}) == len(samples)
    with torch.no_grad():  # p_old: the current policy shifted, so the proximal term has a gradient
        keys, seq, legal, _ = legal_answer_table(model, tok, samples, tok.pad_token_id)
        old = legal_log_probs(seq + torch.tensor([0.3, -0.3]), legal)[0]
    old_legal = dict(zip(keys, old))

    def grads(micro_batch):
        cfg = _rl_cfg(algorithm="mmd", micro_batch_size=micro_batch, token_aggregation="seq_sum",
                      mmd={"magnet": "uniform", "eta": 0.5, "validity": 1.0})
        step = MMDStep(cfg.mmd, 0.4, None, old_legal, True)
        _, total, _ = accumulate_gradients(model, None, samples, cfg, tok.pad_token_id, 8, tok, contextlib.nullcontext,
                                           None, "rl", 0, old_is_current=True, temperature=1.0, mmd=step)
        return [p.grad.detach().clone() for p in model.parameters()], total

    g_full, t_full = grads(None)
    g_micro, t_micro = grads(micro)
    assert any(g.abs().sum() > 0 for g in g_full)
    for a, b in zip(g_full, g_micro):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)
    assert t_micro == pytest.approx(t_full, rel=1e-5, abs=1e-7)


# ------------------------------------------------------------------------------ the per-state moving magnet
def test_moving_magnet_by_hand():
    # rho uniform over 2 answers, p = (0.8, 0.2), m = 0.5: rho' ∝ (sqrt(0.5 * 0.8), sqrt(0.5 * 0.2)) = (2/3, 1/3);
    # a padded (illegal) column stays 0
    from compose_rl.rl.losses import moving_magnet

    legal = torch.tensor([[True, True, False]])
    rho = uniform_log_probs(legal).double()
    p = torch.tensor([[0.8, 0.2, 1.0]], dtype=torch.float64).log().masked_fill(~legal, 0.0)
    new = moving_magnet(rho, p, legal, 0.5)
    assert new.exp()[0, :2].tolist() == pytest.approx([2 / 3, 1 / 3], abs=1e-12)
    assert new[0, 2].item() == 0.0
    assert torch.allclose(moving_magnet(rho, p, legal, 1.0)[0, :2], p[0, :2], atol=1e-12)  # m = 1: the policy


def test_magnet_table_follows_the_policy_state_by_state(tiny_policy):
    # MagnetTable (rl.mmd.magnet: moving_table): uniform for states never updated; after two updates towards the
    # same p, rho ∝ p^(1 - (1 - m)^2) at the updated states only; rows keep each state's own legal width and
    # round-trip through the checkpoint's state dict
    from compose_rl.rl.learner import MagnetTable, legal_answer_table
    from tests.test_scale import _samples

    tok, model = tiny_policy.tokenizer, tiny_policy.model
    with torch.no_grad():
        keys, seq, legal, _ = legal_answer_table(model, tok, _samples(tok, legal=True), tok.pad_token_id)
    logp, _ = legal_log_probs(seq, legal)
    m = 0.3
    table = MagnetTable(m)
    assert torch.equal(table.log_probs(keys, legal), uniform_log_probs(legal))
    half = len(keys) // 2
    for _ in range(2):
        table.update(keys[:half], logp[:half], legal[:half])
    got = table.log_probs(keys, legal)
    power = 1 - (1 - m) ** 2
    expect, _ = legal_log_probs(power * logp[:half], legal[:half])
    assert torch.allclose(got[:half], expect, atol=1e-6)
    assert not torch.allclose(got[:half], uniform_log_probs(legal[:half]), atol=1e-3)  # it moved
    assert torch.equal(got[half:], uniform_log_probs(legal[half:]))  # states not updated keep the uniform magnet
    assert all(r.numel() == int(legal[i].sum()) for i, r in enumerate(table.rows.values()))
    again = MagnetTable(0.9)
    again.load_state_dict(table.state_dict())
    assert again.rate == m and torch.equal(again.log_probs(keys, legal), got)


def _as_if_killed_after(run: str, dst: str, step: int, steps: int) -> str:
    """A copy of the finished games run `run` (stages [sft, rl], one RL checkpoint per step) as it would be had it
    been killed right after the RL checkpoint of `step`: the later checkpoints and the RL stage's completion
    removed, LATEST pointing at that checkpoint. Returns `dst`."""
    import json
    import os
    import shutil

    shutil.copytree(run, dst)
    for gone in [f"checkpoints/rl-{j:06d}" for j in range(step + 1, steps)] + ["checkpoints/rl-final", "stages/rl"]:
        shutil.rmtree(os.path.join(dst, gone))
    with open(os.path.join(dst, "checkpoints", "LATEST"), "w") as f:
        f.write(f"rl-{step:06d}")
    progress = json.load(open(os.path.join(dst, "progress.json")))
    progress["done"] = [0]
    json.dump(progress, open(os.path.join(dst, "progress.json"), "w"))
    return dst


@pytest.mark.parametrize("update", ["gradient", "target"])
def test_moving_table_magnet_is_checkpointed_and_resumes_bit_identically(tmp_path, update):
    # two smoke RL steps; then the same run "killed" after its step-0 checkpoint (later checkpoints and the
    # stage's completion removed) and resumed: step 1 and the final magnet table (and, with update: target,
    # the value table) equal the uninterrupted run's
    import glob
    import json
    import os

    from compose_rl.cli import main
    from tests.conftest import ROOT

    out = tmp_path / "runs"
    over = ["--smoke", f"output={out}", "stages=[sft,rl]", "rl.mmd.magnet=moving_table", "rl.lr_schedule=constant",
            "rl.drop_zero_advantage=false", f"rl.mmd.update={update}", "rl.mmd.eta=0.3"]
    # (the smoke model plays invalid answers: keep their zero-advantage states)
    assert main(["recipe", os.path.join(ROOT, "recipes", "spiral-kuhn.yaml"), *over]) == 0
    (run,) = glob.glob(str(out / "*"))
    ck = os.path.join(run, "checkpoints")
    tables = {t: torch.load(os.path.join(ck, t, "state.pt"), weights_only=False)["magnet_table"]
              for t in ("rl-000000", "rl-000001")}
    assert len(tables["rl-000000"]["keys"]) > 0
    assert not torch.equal(tables["rl-000000"]["rows"][0], tables["rl-000001"]["rows"][0])  # it moves every step
    killed = _as_if_killed_after(run, str(tmp_path / "killed"), 0, 2)
    assert main(["recipe", "--resume", killed]) == 0
    resumed = torch.load(os.path.join(killed, "checkpoints", "rl-000001", "state.pt"), weights_only=False)["magnet_table"]
    assert resumed["keys"] == tables["rl-000001"]["keys"]
    assert all(torch.equal(a, b) for a, b in zip(resumed["rows"], tables["rl-000001"]["rows"]))
    if update == "target":
        q = [torch.load(os.path.join(d, "checkpoints", "rl-000001", "state.pt"), weights_only=False)["q_table"]
             for d in (run, killed)]
        assert q[0]["keys"] == q[1]["keys"] and all(torch.equal(a, b) for a, b in zip(q[0]["rows"], q[1]["rows"]))

    def rl_rows(d):
        return [(r["step"], r.get("loss/total")) for r in map(json.loads, open(os.path.join(d, "metrics.jsonl")))
                if r["stage"] == "rl"]
    assert rl_rows(killed) == rl_rows(run) and len(rl_rows(run)) == 2


def test_rl_optimizer_sgd_reaches_the_learner(tmp_path):
    # rl.optimizer: sgd -> the checkpointed optimizer is plain SGD (no momentum, no Adam moments) at rl.lr, and
    # each step moves the weights by lr times the gradient: a step at lr 0 leaves them exactly as they were
    import glob
    import os

    from compose_rl.cli import main
    from tests.conftest import ROOT

    def run(out, lr):
        assert main(["recipe", os.path.join(ROOT, "recipes", "spiral-kuhn.yaml"), "--smoke", f"output={out}",
                     "stages=[sft,rl]", "rl.optimizer=sgd", f"rl.lr={lr}", "rl.lr_schedule=constant",
                     "rl.drop_zero_advantage=false"]) == 0
        (run_dir,) = glob.glob(str(out / "*"))
        load = lambda t: torch.load(os.path.join(run_dir, "checkpoints", t, "state.pt"), weights_only=False)  # noqa: E731
        return load("sft-final")["model"], load("rl-000001")

    before, after = run(tmp_path / "a", 0.5)
    group = after["optimizer"]["param_groups"][0]
    assert group["lr"] == 0.5 and group["momentum"] == 0 and "betas" not in group
    assert not any("exp_avg" in st for st in after["optimizer"]["state"].values())
    assert any(not torch.equal(before[k], after["model"][k]) for k in before)
    before0, after0 = run(tmp_path / "b", 1e-30)
    assert all(torch.equal(before0[k], after0["model"][k]) for k in before0)


def test_rl_switch_changes_optimizer_at_its_step_and_resumes_with_it(tmp_path):
    # rl.switch {step: 1, optimizer: sgd, lr: 0.5} over 3 steps: step 0's checkpoint holds Adam's moments, steps 1
    # and 2 a fresh SGD at 0.5. Killed after step 0 (resumes with Adam, switches at step 1) or after step 1
    # (resumes with the saved SGD), the run ends with the uninterrupted run's weights
    import glob
    import os

    from compose_rl.cli import main
    from tests.conftest import ROOT

    out = tmp_path / "runs"
    assert main(["recipe", os.path.join(ROOT, "recipes", "spiral-kuhn.yaml"), f"output={out}", "stages=[sft,rl]",
                 "sft.examples=64", "sft.max_steps=4", "sft.batch_size=16", "sft.gate=off", "rl.steps=3",
                 "rl.checkpoint_every=1", "rl.eval_every=0", "rl.games_per_step=8", "checkpoint.keep=3",
                 "rl.lr_schedule=constant", "rl.drop_zero_advantage=false", "primitives=null", "eval.games=4",
                 "rl.switch={step: 1, optimizer: sgd, lr: 0.5}"]) == 0
    (run,) = glob.glob(str(out / "*"))
    load = lambda d, t: torch.load(os.path.join(d, "checkpoints", t, "state.pt"), weights_only=False)  # noqa: E731
    groups = [load(run, f"rl-00000{k}")["optimizer"]["param_groups"][0] for k in range(3)]
    assert "betas" in groups[0] and all(g["lr"] == 0.5 and g["momentum"] == 0 and "betas" not in g for g in groups[1:])
    final = load(run, "rl-000002")["model"]
    for k in (0, 1):
        killed = _as_if_killed_after(run, str(tmp_path / f"killed{k}"), k, 3)
        assert main(["recipe", "--resume", killed]) == 0
        again = load(killed, "rl-000002")
        assert "betas" not in again["optimizer"]["param_groups"][0]
        assert all(torch.equal(final[key], again["model"][key]) for key in final), k


def test_mmd_target_is_the_closed_form_maximiser_by_hand():
    # two answers, p_old uniform, rho uniform, q = (1, 0), alpha 0.5, eta 0.3: p*(a0) = sigmoid(0.3 / 1.15) = 0.564853;
    # three answers at random: p* beats every point of a grid on <p, q> - alpha KL(p || rho) - KL(p || p_old) / eta
    from compose_rl.rl.losses import mmd_target

    legal = torch.tensor([[True, True]])
    u = uniform_log_probs(legal).double()
    p = mmd_target(u, torch.tensor([[1.0, 0.0]], dtype=torch.float64), u, legal, 0.5, 0.3).exp()
    assert p[0, 0].item() == pytest.approx(1 / (1 + math.exp(-0.3 / 1.15)), abs=1e-12)
    gen = torch.Generator().manual_seed(3)
    legal3 = torch.ones(1, 3, dtype=torch.bool)
    old = torch.log_softmax(torch.randn(1, 3, generator=gen, dtype=torch.float64), -1)
    rho = torch.log_softmax(torch.randn(1, 3, generator=gen, dtype=torch.float64), -1)
    q = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    alpha, eta = 0.7, 0.4

    def objective(logp):
        return float((logp.exp() * q).sum() - alpha * kl_categorical(logp, rho, legal3).sum()
                     - kl_categorical(logp, old, legal3).sum() / eta)
    best = objective(mmd_target(old, q, rho, legal3, alpha, eta))
    grid = [(a / 40, b / 40) for a in range(1, 40) for b in range(1, 40 - a)]
    assert all(objective(torch.tensor([[a, b, 1 - a - b]], dtype=torch.float64).log()) <= best + 1e-12 for a, b in grid)


def test_q_table_means_the_returns_of_each_answer_at_each_state():
    # QTable: per (state, answer) mean return of the step's valid turns; kept where the answer was not played;
    # invalid turns and re-prompted attempts do not count; decay mixes the previous estimate in
    from compose_rl.rl.learner import QTable
    from compose_rl.types import Sample

    legal = ["\\boxed{pass}", "\\boxed{bet}"]

    def turn(prompt, action, reward, valid=True, retry=False):
        return Sample(prompt_ids=prompt, completion_ids=[1], old_logprobs=[0.0], reward=reward, retry=retry,
                      info={"legal_answers": legal, "action": action, "valid": valid})

    q = QTable(decay=0.0)
    used = q.update([turn([1], "bet", 2.0), turn([1], "bet", -1.0), turn([1], "pass", 1.0), turn([2], "pass", -2.0),
                     turn([2], "bet", -3.0, valid=False), turn([2], "bet", -3.0, retry=True)])
    assert used == 4
    legal_t = torch.ones(3, 2, dtype=torch.bool)
    assert q.values([(1,), (2,), (9,)], legal_t).tolist() == [[1.0, 0.5], [-2.0, 0.0], [0.0, 0.0]]
    q.decay = 0.25
    q.update([turn([1], "bet", 1.5)])
    assert q.values([(1,)], legal_t[:1]).tolist() == [[1.0, 0.25 * 0.5 + 0.75 * 1.5]]
    again = QTable()
    again.load_state_dict(q.state_dict())
    assert again.decay == 0.25 and torch.equal(again.values([(1,), (2,)], legal_t[:2]), q.values([(1,), (2,)], legal_t[:2]))


def test_report_names_the_update_and_optimizer_as_they_ran():
    from compose_rl.report.reference import learner_line

    rows = [{"stage": "rl", "loss/clip_frac": 0.0}]
    plain = learner_line({"rl": {"algorithm": "mmd", "mmd": {"magnet": "uniform"}, "lr": 3e-4}}, rows)[0]
    assert "REINFORCE" in plain and "optimizer adam." in plain and "closed-form" not in plain
    tgt = learner_line({"rl": {"algorithm": "mmd", "optimizer": "adam", "mmd": {"update": "target", "target_steps": 4},
                               "switch": {"step": 100, "optimizer": "sgd", "lr": 0.5}}}, [{"stage": "rl"}])[0]
    assert "closed-form step per state" in tgt and "4 adam steps" in tgt and "then sgd at lr 0.5 from step 100" in tgt


def test_tabular_target_step_by_hand():
    # TabularPolicy.target_step: q = each (state, action)'s mean return over the turns, kept where not played;
    # the visited rows become the closed form from (old p, q, magnet); other rows keep their logits
    from compose_rl.rl.losses import mmd_target

    tg = TabularGame.build(pyspiel.load_game("kuhn_poker"))
    pol = TabularPolicy(tg, lr=1.0, seed=0)
    before = pol.logits.detach().clone()
    old = pol.log_probs()[0].detach().clone()
    cfg = MMDConfig(alpha=0.5, eta=0.3, magnet="uniform", update="target")
    pol.target_step([(0, 1, 2.0), (0, 1, 0.0), (0, 0, -1.0), (3, 0, 1.0)], cfg)
    assert pol.q[0].tolist() == [-1.0, 1.0] and pol.q[3].tolist() == [1.0, 0.0] and pol.q[1].abs().sum() == 0
    rows = torch.tensor([0, 3])
    goal = mmd_target(old[rows], pol.q[rows], uniform_log_probs(tg.legal[rows]).double(), tg.legal[rows], 0.5, 0.3)
    assert torch.allclose(pol.log_probs()[0][rows].detach(), goal, atol=1e-12)
    assert pol.probs()[0, 1] > 0.5 + 0.05  # the better answer gained
    others = [i for i in range(len(tg.keys)) if i not in (0, 3)]
    assert torch.equal(pol.logits.detach()[others], before[others])
    pol.target_step([(0, 0, 1.0)], cfg)  # action 1 not played: its value is kept
    assert pol.q[0].tolist() == [1.0, 1.0]
