"""Tests for the text game layer: renderers (no private-info leaks), parsers, envs, opponents."""
from __future__ import annotations

import random
import re

import pytest

from games import GAMES, get_game
from games.base import last_boxed
from games.env import SPIRAL_INVALID, GameEnv, InvalidPolicy
from games.leduc_poker import card_name
from games.opponents import make_opponent, nash_policy, opponent_kinds

KUHN = GAMES["kuhn_poker"]
LEDUC = GAMES["leduc_poker"]
TTT = GAMES["tic_tac_toe"]
LIARS = GAMES["liars_dice"]
BARG = GAMES["bargaining"]


def random_decision_states(game, n_games: int, seed: int):
    """Every decision state visited by `n_games` uniformly random playouts."""
    rng = random.Random(seed)
    out = []
    for _ in range(n_games):
        s = game.new_initial_state(rng)
        while not s.is_terminal():
            out.append(s.clone())
            s.apply_action(rng.choice(s.legal_actions()))
            game.resolve_chance(s, rng)
    return out


def all_kuhn_decision_states():
    out = []

    def walk(s):
        if s.is_terminal():
            return
        if s.is_chance_node():
            for a, _ in s.chance_outcomes():
                walk(s.child(a))
            return
        out.append(s)
        for a in s.legal_actions():
            walk(s.child(a))

    walk(KUHN.openspiel_game.new_initial_state())
    return out


# ---------------------------------------------------------------------------- registry
def test_registry_and_get_game():
    assert set(GAMES) == {"kuhn_poker", "leduc_poker", "tic_tac_toe", "liars_dice", "bargaining"}
    for name, g in GAMES.items():
        assert g.name == name and get_game(name) is g
    with pytest.raises(ValueError, match="kuhn_poker"):
        get_game("chess960")


# ---------------------------------------------------------------------------- private info
def test_kuhn_every_information_state_hides_opponent_card():
    states = all_kuhn_decision_states()
    assert len(states) == 24  # 6 deals x 4 decision points
    prompts_by_infostate: dict[tuple[int, str], set[str]] = {}
    for s in states:
        p = s.current_player()
        own, opp = "JQK"[s.history()[p]], "JQK"[s.history()[1 - p]]
        prompt = KUHN.prompt(s, p)
        assert prompt.startswith(KUHN.rules)
        body = prompt[len(KUHN.rules):]
        assert not re.search(rf"\b{opp}\b", body), body
        assert not re.search(rf"\b{opp}\b", KUHN.render(s, p))
        assert prompt.endswith(f"Your card: {own}")  # private card is the last token
        assert len(prompt) <= 600
        prompts_by_infostate.setdefault((p, s.information_state_string(p)), set()).add(prompt)
    assert len(prompts_by_infostate) == 12
    assert all(len(v) == 1 for v in prompts_by_infostate.values())


def _replay(game, history, index, replacement):
    s = game.openspiel_game.new_initial_state()
    for i, a in enumerate(history):
        a = replacement if i == index else a
        legal = [o for o, _ in s.chance_outcomes()] if s.is_chance_node() else s.legal_actions()
        if a not in legal:
            return None
        s.apply_action(a)
    return s


@pytest.mark.parametrize("name", ["kuhn_poker", "leduc_poker", "liars_dice", "bargaining"])
def test_prompt_depends_only_on_information_state(name):
    """Changing any chance outcome the player cannot see leaves the prompt unchanged."""
    game = GAMES[name]
    rng = random.Random(7)
    compared = 0
    for s in random_decision_states(game, 12, seed=3):
        p = s.current_player()
        hist = s.history()
        prompt, info = game.prompt(s, p), s.information_state_string(p)
        for i in range(len(hist)):
            prefix = game.openspiel_game.new_initial_state()
            for a in hist[:i]:
                prefix.apply_action(a)
            if not prefix.is_chance_node():
                continue
            outcomes = [o for o, _ in prefix.chance_outcomes() if o != hist[i]]
            for o in rng.sample(outcomes, min(len(outcomes), 40)):
                alt = _replay(game, hist, i, o)
                if alt is None or alt.is_terminal() or alt.current_player() != p:
                    continue
                if alt.information_state_string(p) != info:
                    continue
                compared += 1
                assert game.prompt(alt, p) == prompt
    if name != "bargaining":  # bargaining instances rarely share one player's view
        assert compared > 10


def test_leduc_prompt_hides_opponent_card():
    for s in random_decision_states(LEDUC, 60, seed=1):
        p = s.current_player()
        prompt = LEDUC.prompt(s, p)
        own, opp = s.history()[p], s.history()[1 - p]
        assert card_name(opp) not in prompt
        assert prompt.endswith(f"Your card: {card_name(own)}")
        assert "Private" not in prompt and "-10000" not in prompt


def test_liars_dice_prompt_shows_only_own_die():
    for s in random_decision_states(LIARS, 60, seed=2):
        p = s.current_player()
        prompt = LIARS.prompt(s, p)
        own_face = s.history()[p] + 1
        last = prompt.split("\n")[-1]
        assert last == f"Your die: {own_face}"
        assert sum(1 for ln in prompt.split("\n") if ln.startswith("Your di")) == 1
        assert prompt.split("\n")[-2].startswith("Bids: ")  # the only other state line


def test_bargaining_prompt_hides_opponent_values():
    for s in random_decision_states(BARG, 10, seed=4):
        p = s.current_player()
        prompt = BARG.prompt(s, p)
        own = BARG.values(s, p)
        assert prompt.endswith(f"Your values: book {own[0]}, hat {own[1]}, ball {own[2]}.")
        assert prompt.count("values") == 2  # once in the rules, once for own values


# ---------------------------------------------------------------------------- names & parsing
@pytest.mark.parametrize("name", list(GAMES))
def test_answer_text_round_trips_and_names_unique(name):
    game = GAMES[name]
    for s in random_decision_states(game, 15, seed=5):
        names = game.action_names(s)
        assert list(names) == s.legal_actions()
        assert len(set(names.values())) == len(names)
        for a in s.legal_actions():
            text = game.answer_text(s, a)
            assert text == "\\boxed{" + names[a] + "}"
            assert game.parse(text, s) == a
            assert game.parse("Let me think. " + text, s, lenient=True) == a


def test_action_name_schemes():
    s = KUHN.new_initial_state(random.Random(0))
    assert list(KUHN.action_names(s).values()) == ["pass", "bet"]
    s = TTT.new_initial_state(random.Random(0))
    assert list(TTT.action_names(s).values()) == [
        "a1", "b1", "c1", "a2", "b2", "c2", "a3", "b3", "c3"]
    s = LEDUC.new_initial_state(random.Random(0))
    assert list(LEDUC.action_names(s).values()) == ["call", "raise"]
    s = LIARS.new_initial_state(random.Random(0))
    names = LIARS.action_names(s)
    assert names[0] == "1 one" and names[10] == "2 fives" and "liar" not in names.values()
    s.apply_action(0)
    assert LIARS.action_names(s)[12] == "liar"
    s = BARG.new_initial_state(random.Random(0))
    assert all(re.fullmatch(r"offer \d \d \d", n) for n in BARG.action_names(s).values())
    s.apply_action(s.legal_actions()[1])
    assert BARG.action_names(s)[BARG.agree_action] == "agree"


def test_parser_edge_cases():
    s = KUHN.new_initial_state(random.Random(0))
    parse = KUHN.parse
    assert parse("", s) is None
    assert parse("bet", s) is None  # no box
    assert parse("\\boxed{}", s) is None
    assert parse("\\boxed{ }", s, lenient=True) is None
    assert parse("\x00\x01 }}{{ \\boxed{{{", s) is None
    assert parse("\\boxed{raise}", s) is None
    assert parse("\\boxed{bet}", s) == 1
    assert parse("\\boxed{pass} no wait \\boxed{bet}", s) == 1  # last box wins
    assert parse("\\boxed{bet} hmm \\boxed{pass}", s) == 0
    assert parse("\\boxed{bet} then \\boxed{pas", s) is None  # unclosed last box: invalid
    assert parse("\\boxed{Bet}", s) is None  # strict: exact case
    assert parse("\\boxed{Bet}", s, lenient=True) == 1
    assert parse("\\boxed{ BET. }", s, lenient=True) == 1
    assert parse("\\boxed{ bet}", s) is None
    assert parse("\\boxed{\\text{bet}}", s) is None
    assert parse("\\boxed{\\text{bet}}", s, lenient=True) == 1
    assert parse("\\boxed{b}", s, lenient=True) is None  # no prefix matching
    assert last_boxed("x \\boxed{a{b}c} y") == "a{b}c"
    assert last_boxed("\\boxed{a \\boxed{b}}") == "b"
    assert last_boxed(None) is None  # type: ignore[arg-type]
    t = TTT.new_initial_state(random.Random(0))
    assert TTT.parse("\\boxed{B2}", t) is None and TTT.parse("\\boxed{B2}", t, lenient=True) == 4
    b = BARG.new_initial_state(random.Random(0))
    a = b.legal_actions()[3]
    keep = BARG.offers[a]
    assert BARG.parse("\\boxed{Offer: %d, %d, %d}" % keep, b) is None
    assert BARG.parse("\\boxed{Offer: %d, %d, %d}" % keep, b, lenient=True) == a
    assert BARG.parse("\\boxed{agree}", b) is None  # nothing to agree to yet
    assert BARG.parse("\\boxed{offer 9 9 9}", b) is None


def test_kuhn_prompt_is_compact():
    for s in all_kuhn_decision_states():
        assert len(KUHN.prompt(s, s.current_player())) <= 600


# ---------------------------------------------------------------------------- env
def test_env_penalty_ends_game():
    env = GameEnv(KUHN, invalid=InvalidPolicy(penalty=-3.0, other=0.0))
    env.reset(0)
    assert env.current_player == 0 and env.legal_actions() == ["pass", "bet"]
    assert env.observation(0) == KUHN.prompt(env.state, 0)
    r = env.step("I refuse to play")
    assert not r.valid and r.action is None
    assert env.done and env.invalid_by == 0 and env.current_player == -1
    assert env.returns() == [-3.0, 0.0]
    env = GameEnv(KUHN, invalid=SPIRAL_INVALID)
    env.reset(1)
    env.step("\\boxed{pass}")
    env.step("\\boxed{}")
    assert env.returns() == [0.5, -1.5] and env.invalid_by == 1
    assert env.transcript[0].startswith("P0: \\boxed{pass}")


def test_env_retry_mode():
    env = GameEnv(KUHN, invalid=InvalidPolicy(mode="retry", retries=2, penalty=-3.0))
    env.reset(3)
    assert not env.step("garbage").valid and not env.done and env.current_player == 0
    assert not env.step("garbage").valid and not env.done
    assert env.step("\\boxed{bet}").valid and env.current_player == 1
    # the retry budget is per turn
    env.step("x")
    env.step("y")
    assert not env.done
    env.step("z")
    assert env.done and env.returns() == [0.0, -3.0]


def test_env_turn_cap_is_draw_and_normal_end():
    env = GameEnv(TTT, max_turns=3)
    env.reset(0)
    for cell in ("b2", "a1", "c3"):
        env.step("\\boxed{%s}" % cell)
    assert env.done and env.truncated_turn_cap and env.returns() == [0.0, 0.0]
    env = GameEnv(TTT)
    env.reset(0)
    for cell in ("a1", "a2", "b1", "b2"):
        env.step("\\boxed{%s}" % cell)
    env.step_action(2)  # c1: x completes the top row
    assert env.done and not env.truncated_turn_cap and env.returns() == [1.0, -1.0]
    assert env.transcript[-1] == "P0 plays c1"
    with pytest.raises(ValueError):
        env2 = GameEnv(TTT)
        env2.reset(0)
        env2.step_action(99)


def test_env_is_deterministic_by_seed():
    def deal(seed):
        env = GameEnv(LEDUC)
        env.reset(seed)
        while not env.done:
            env.step("\\boxed{call}")
        return env.state.history(), env.returns()

    assert deal(11) == deal(11)
    assert len({str(deal(s)) for s in range(10)}) > 1


# ---------------------------------------------------------------------------- opponents
def test_opponent_kinds_and_errors():
    assert opponent_kinds(KUHN) == ["random", "nash", "mcts"]
    assert opponent_kinds(TTT) == ["random", "minimax", "mcts"]
    assert opponent_kinds(LIARS) == ["random"]
    with pytest.raises(ValueError, match="supported"):
        make_opponent("minimax", KUHN, 0)
    with pytest.raises(ValueError, match="supported"):
        make_opponent("mcts", LIARS, 0)
    with pytest.raises(ValueError):
        make_opponent("alphazero", TTT, 0)
    with pytest.raises(ValueError):
        nash_policy(TTT)


def test_kuhn_nash_beats_random_in_expectation():
    from open_spiel.python import policy as policy_lib
    from open_spiel.python.algorithms import exploitability, expected_game_score

    nash = nash_policy(KUHN)
    assert nash_policy("kuhn_poker") is nash  # cached
    og = KUHN.openspiel_game
    uni = policy_lib.UniformRandomPolicy(og)
    root = og.new_initial_state()
    as_p0 = expected_game_score.policy_value(root, [nash, uni])[0]
    as_p1 = expected_game_score.policy_value(root, [uni, nash])[1]
    assert as_p0 >= 0 and as_p1 >= 0 and (as_p0 + as_p1) / 2 > 0.1
    assert exploitability.exploitability(og, nash) < 1e-2
    # the sampled opponent only plays legal actions
    bot = make_opponent("nash", KUHN, seed=0)
    for s in all_kuhn_decision_states():
        assert bot(s) in s.legal_actions()


def _play(game, bots, seed):
    rng = random.Random(seed)
    s = game.new_initial_state(rng)
    while not s.is_terminal():
        s.apply_action(bots[s.current_player()](s))
        game.resolve_chance(s, rng)
    return s.returns()


def test_minimax_never_loses_tic_tac_toe():
    for i in range(50):
        seat = i % 2
        bots = [None, None]
        bots[seat] = make_opponent("minimax", TTT, seed=i)
        bots[1 - seat] = make_opponent("random", TTT, seed=100 + i)
        assert _play(TTT, bots, i)[seat] >= 0


@pytest.mark.parametrize("name", list(GAMES))
def test_every_opponent_kind_plays_legal_games(name):
    game = GAMES[name]
    for kind in opponent_kinds(game):
        if kind == "nash" and name == "leduc_poker":
            continue  # ~2 s solve; exercised by the evals
        bots = [make_opponent(kind, game, seed=1), make_opponent("random", game, seed=2)]
        for i in range(3):
            _play(game, bots, i)


def test_reason_answer_style_rewrites_every_game_prompt():
    """games.answer=reason: the policy's prompts ask for reasoning first; the parser still reads the last box."""
    import random

    from compose_rl.models import load_policy
    from games import GAMES
    from games.base import INSTRUCTION, REASON_INSTRUCTION

    policy = load_policy("tiny", seed=0)
    policy.rewrites = ((INSTRUCTION, REASON_INSTRUCTION),)
    for game in GAMES.values():
        state = game.new_initial_state(random.Random(0))
        game.resolve_chance(state, random.Random(0))
        text = policy.format_prompt(game.prompt(state, state.current_player()))
        assert REASON_INSTRUCTION in text and INSTRUCTION not in text, game.name
        legal = state.legal_actions()[0]
        reply = "I hold the card, so \\boxed{wrong} is tempting; final: " + game.answer_text(state, legal)
        assert game.parse(reply, state) == legal
