"""A hand-labelled set of short reasoning traces, for calibrating the trace detectors.

Written by hand for this project (game and probe traces mixed), each labelled with the primitives it
shows (codes below; empty = none). Wording is varied on purpose: many positives avoid the obvious
keywords, and some negatives use them in another sense ("in that case I pass", "wait for the flop"),
so a keyword detector is not perfect on it. Labels follow the definitions in register.py.
"""
from __future__ import annotations

from dataclasses import dataclass

CODES = {"ev": "expected_value", "case": "case_analysis", "back": "backtracking", "sub": "subgoaling",
         "ver": "verification", "ded": "deduction", "tom": "theory_of_mind", "pat": "pattern_recognition"}


@dataclass(frozen=True)
class Trace:
    id: int
    source: str
    text: str
    labels: frozenset[str]


_RAW: list[tuple[str, str, str]] = [
    # ---------------------------------------------------------------- Kuhn poker
    ("kuhn", "I have the King, the best card. Whatever they hold, calling wins the pot, so I call. \\boxed{bet}", "case"),
    ("kuhn", "Jack is the lowest card; any call from me loses 2 at showdown while folding costs only the ante. \\boxed{pass}", "ev"),
    ("kuhn", "They bet into me. People rarely bet a Jack here, so this bet probably means a King. I'll fold my Queen. \\boxed{pass}", "tom"),
    ("kuhn", "I'll bet. \\boxed{bet}", ""),
    ("kuhn", "Pass. \\boxed{pass}", ""),
    ("kuhn", "If they have the Jack they fold to my bet and I win 1, the same as checking; if they have the King they call and I lose 2 instead of 1. Betting the Queen gains nothing, so I check. \\boxed{pass}", "case,ev"),
    ("kuhn", "The pot is 3 and calling costs 1. I need to win more than a quarter of the time for the call to pay. With a Queen I beat only a bluffing Jack; if they bluff a third of their Jacks I win 1 time in 4, exactly break-even. \\boxed{bet}", "ev,tom"),
    ("kuhn", "King after a check: betting can only do better than checking, since they either fold and I take 1 or call and I take 2. \\boxed{bet}", "case,ev"),
    ("kuhn", "My opponent checked. A player holding the King would usually bet, so they likely have the Jack or Queen. \\boxed{bet}", "tom"),
    ("kuhn", "In that case I just pass. \\boxed{pass}", ""),
    ("kuhn", "Let me think about the bluff. If I bet the Jack 1/3 of the time, they cannot exploit me by always calling. \\boxed{bet}", "tom"),
    ("kuhn", "Let me bet... no, wait, betting a Queen first only gets called by the King. Going back to checking instead. \\boxed{pass}", "back,tom"),
    ("kuhn", "Queen is the middle card. I bet. Actually let me double-check the rules: pass folds to a bet, bet calls. Yes, so bet here means call. \\boxed{bet}", "ver"),
    ("kuhn", "Expected value of calling: 0.5 * 2 + 0.5 * (-2) = 0. Folding gives -1. Call. \\boxed{bet}", "ev"),
    ("kuhn", "Since the King always wins at showdown, and I hold it, I cannot lose by calling. \\boxed{bet}", "ded"),
    ("kuhn", "Same spot as before: Jack facing a bet, the textbook fold. \\boxed{pass}", "pat"),
    ("kuhn", "They think I'm weak because I checked, so they will bet anything. I'll call with the Queen. \\boxed{bet}", "tom"),
    ("kuhn", "The card is K. \\boxed{bet}", ""),
    ("kuhn", "I hold J. There are two cards left, Q and K, both beat me. So a call always loses. \\boxed{pass}", "case,ded"),
    ("kuhn", "Betting the King here is standard value betting. \\boxed{bet}", "pat"),
    # ---------------------------------------------------------------- Leduc poker
    ("leduc", "The public card is a Queen and so is mine: a pair. The only other Queen is on the board, so nobody can have a better hand. Raise. \\boxed{raise}", "ded"),
    ("leduc", "Board King, I hold a Jack. If they have a King they have a pair and I lose; if they have a Queen I lose on rank; only a Jack ties. Fold to the raise. \\boxed{fold}", "case"),
    ("leduc", "Round 1, nothing has happened yet. I'll call. \\boxed{call}", ""),
    ("leduc", "A pair on the board is the nuts in this game, raise. \\boxed{raise}", "pat"),
    ("leduc", "They raised twice in round one. Someone who raises twice usually has a King. My Queen is probably behind. \\boxed{fold}", "tom"),
    ("leduc", "Pot is 10, I must put in 4 more. If I win 40% of the time: 0.4 * 14 - 0.6 * 4 = 5.6 - 2.4 = 3.2 > 0. Calling is profitable. \\boxed{call}", "ev"),
    ("leduc", "First I want to see the public card cheaply, so I just call now and decide in round two. \\boxed{call}", "sub"),
    ("leduc", "I wanted to raise but let me re-read: two raises were already made this round, so raise is not allowed. Call instead. \\boxed{call}", "ver,back"),
    ("leduc", "Let me go through their possible cards one by one: Jack of hearts, Queen of spades, King of spades. Against two of three I win. \\boxed{call}", "case"),
    ("leduc", "Wait for round two before committing chips. \\boxed{call}", ""),
    ("leduc", "They checked the Queen board. If they had the Queen they would raise to build the pot, so they probably don't have it. I bet. \\boxed{raise}", "tom,ded"),
    ("leduc", "I hold the King and the public card is a Jack. No pair for me. Opponent can pair only with the other Jack. \\boxed{call}", "case"),
    ("leduc", "My answer is raise. Checking it against the rules: raise is legal, one raise so far. OK. \\boxed{raise}", "ver"),
    ("leduc", "Calling costs 2 for a pot of 6: I need one win in four. With a King I win more than that. \\boxed{call}", "ev"),
    ("leduc", "Folding. \\boxed{fold}", ""),
    ("leduc", "So they have either the Jack or the King. Either way my Queen pair wins. \\boxed{raise}", "case"),
    ("leduc", "Hmm, I first thought fold, but that gives up the 6 already in the pot for a 2-chip call; scrap that, I call. \\boxed{call}", "back,ev"),
    ("leduc", "This is the classic spot where a raise with the top card gets value from Queens. \\boxed{raise}", "pat,tom"),
    # ---------------------------------------------------------------- tic-tac-toe
    ("ttt", "I have x on a1 and b1, c1 is empty: playing c1 completes the row. \\boxed{c1}", "pat"),
    ("ttt", "o has b2 and b1, so o threatens b3. I must block b3 before anything else. \\boxed{b3}", "tom"),
    ("ttt", "Taking the center. \\boxed{b2}", ""),
    ("ttt", "If I play a3 I threaten both a2 (column) and b2 (diagonal); they can only stop one. \\boxed{a3}", "sub"),
    ("ttt", "Two in a row with a gap — finish it. \\boxed{c3}", "pat"),
    ("ttt", "Let me try c1: then o blocks at b2 and I have nothing. Try a3 instead: that makes two threats. Go a3. \\boxed{a3}", "back,sub"),
    ("ttt", "My opponent will try to complete the diagonal a1-b2-c3 next turn, they need c3. \\boxed{c3}", "tom"),
    ("ttt", "Check: after c1 the top row is x x x. Yes, that's a win. \\boxed{c1}", "ver,pat"),
    ("ttt", "I'll play the corner a1. \\boxed{a1}", ""),
    ("ttt", "If o takes a corner, I take the opposite corner; if o takes an edge, I take the center. Here o took a corner. \\boxed{c3}", "case"),
    ("ttt", "To win I need a fork, and to get a fork I first need a second corner. So the second corner now. \\boxed{c1}", "sub"),
    ("ttt", "o can't win next move: no line has two o's. So I can attack freely. \\boxed{a3}", "ded,tom"),
    ("ttt", "Every line through b2 is already blocked, so b2 cannot make me three in a row. \\boxed{a2}", "ded"),
    ("ttt", "The board is almost full; whatever I do it's a draw. \\boxed{c2}", ""),
    ("ttt", "Corner-center-corner, the usual opening trap shape. \\boxed{c3}", "pat"),
    ("ttt", "Wait, c1 is taken. Let me pick again: a3 is free. \\boxed{a3}", "back,ver"),
    ("ttt", "They want me to take the edge so they can fork; I won't fall for it. \\boxed{a1}", "tom"),
    # ---------------------------------------------------------------- bargaining
    ("bargaining", "The offer leaves me 0 books, 0 hats, 0 balls: worth nothing to me. Agreeing gives 0, so I counter. \\boxed{offer 1 0 2}", "ev"),
    ("bargaining", "This is the last offer; if I refuse we both get 0. It gives me 6 points, so I agree. \\boxed{agree}", "ev,ded"),
    ("bargaining", "Books are worth 8 to them and 4 to me. They probably care most about the book, so I'll give it away and keep the balls. \\boxed{offer 0 2 3}", "tom"),
    ("bargaining", "Offer 1 1 1. \\boxed{offer 1 1 1}", ""),
    ("bargaining", "My values: book 4, hat 0, ball 2. Keeping all three balls is worth 6; keeping the book too is 10. Let me ask for book and balls. \\boxed{offer 1 0 3}", "ev"),
    ("bargaining", "I want the balls in the end. To get there, first I concede the hats, which I value at 0, to show good faith. \\boxed{offer 1 0 3}", "sub,tom"),
    ("bargaining", "Let me verify the split adds up: pool has 1 book, 2 hats, 3 balls; I keep 1 0 2, they get 0 2 1. Correct. \\boxed{offer 1 0 2}", "ver"),
    ("bargaining", "They rejected keeping everything twice. They must want some hats. \\boxed{offer 1 0 3}", "tom,ded"),
    ("bargaining", "I first asked for everything; that failed twice, so I go back and ask only for what I value. \\boxed{offer 1 0 3}", "back"),
    ("bargaining", "Either they value hats or they value balls. If hats, giving hats costs me nothing. If balls, I must keep at least two. \\boxed{offer 1 0 2}", "case,tom"),
    ("bargaining", "Agree. \\boxed{agree}", ""),
    ("bargaining", "Chance they accept a fair split is high, say 0.8, for 6 points; a greedy one maybe 0.3 for 10. 4.8 vs 3. Fair split. \\boxed{offer 1 0 2}", "ev,tom"),
    ("bargaining", "Same as last game: a lowball first offer from them, standard counter in the middle. \\boxed{offer 1 1 2}", "pat"),
    ("bargaining", "In any case the deal must give me at least 4 points. \\boxed{offer 1 0 0}", ""),
    # ---------------------------------------------------------------- EV lottery probe
    ("probe:ev_lottery", "A: 0.3 * 50 + 0.7 * 10 = 22. B: 20 for sure. 22 > 20. \\boxed{A}", "ev"),
    ("probe:ev_lottery", "B has the bigger prize, so B. \\boxed{B}", ""),
    ("probe:ev_lottery", "Average of A: 30% of 80 is 24. Average of B: 60% of 45 is 27. B is better. \\boxed{B}", "ev"),
    ("probe:ev_lottery", "A: 24. B: 27. Let me recheck B: 0.6 * 45 = 27, yes. \\boxed{B}", "ev,ver"),
    ("probe:ev_lottery", "Option A pays 89 with 50%, 5 with 30%, 40 with 20%: 44.5 + 1.5 + 8 = 54. Option B: 0.3*74 + 0.2*6 + 0.5*87 = 22.2 + 1.2 + 43.5 = 66.9. \\boxed{B}", "ev"),
    ("probe:ev_lottery", "I'd go with the safe option. \\boxed{B}", ""),
    ("probe:ev_lottery", "Weighting each prize by its chance, A comes to 31 points and B to 28. \\boxed{A}", "ev"),
    ("probe:ev_lottery", "Same prizes in both, A just puts more weight on 98. So A. \\boxed{A}", "ev"),
    ("probe:ev_lottery", "First compute A's mean, then B's, then compare. A = 15 + 7 = 22; B = 20. \\boxed{A}", "ev,sub"),
    ("probe:ev_lottery", "I computed 0.4 * 60 = 18 — no, that's wrong, it is 24. Redo: A = 24 + 6 = 30 > 28. \\boxed{A}", "ev,back,ver"),
    # ---------------------------------------------------------------- case analysis probe
    ("probe:case_analysis", "x = 4: 4/2 + 4 = 6. x = 5: 15 - 6 = 9. x = 6: 3 + 4 = 7. x = 7: 21 - 6 = 15. Sum 37. \\boxed{37}", "case"),
    ("probe:case_analysis", "Take the largest x, 7: score 15. \\boxed{15}", ""),
    ("probe:case_analysis", "Case x even: score x/2 + 3. Case x odd: 3x - 2. The values 2 and 9 give 4 and 25. Total 29. \\boxed{29}", "case"),
    ("probe:case_analysis", "For each possible value I apply the matching rule: 8 -> 7, 11 -> 31, 3 -> 8. Adding: 46. Let me add again: 7 + 31 = 38, + 8 = 46. \\boxed{46}", "case,ver"),
    ("probe:case_analysis", "The answer is 46. \\boxed{46}", ""),
    ("probe:case_analysis", "Split by parity: evens 4, 6 give 2+5 and 3+5; odds 5, 7 give 14 and 20. 7+8+14+20 = 49. \\boxed{49}", "case"),
    ("probe:case_analysis", "I need the sum over all values, so I first need each score separately. 12 -> 10, 13 -> 35. Sum 45. \\boxed{45}", "sub,case"),
    ("probe:case_analysis", "Whether x is 3 or 5, the odd rule applies: 9 - 1 = 8 and 15 - 1 = 14; together 22. \\boxed{22}", "case"),
    # ---------------------------------------------------------------- Countdown probe
    ("probe:backtracking", "Try 25 * 4 = 100, then 100 - 3 = 97, but I still need to use 7. Doesn't work. Try 7 * 4 = 28, 28 * 3 = 84, 84 + 25 = 109. No. Try (25 - 7) * 4 = 72, 72 + 3 = 75. Yes, 75. \\boxed{(25-7)*4+3}", "back"),
    ("probe:backtracking", "5 * 6 = 30, 30 + 4 = 34, 34 - 2 = 32. Target 32. \\boxed{5*6+4-2}", ""),
    ("probe:backtracking", "8 * 6 = 48, too far from 13. Go back: 8 + 6 = 14, 14 - 1 = 13. \\boxed{8+6-1}", "back"),
    ("probe:backtracking", "Need 300 from 4, 5, 6, 6, 8. 300 = 6 * 50, and 50 = 5 * 10 = 5 * (8 + 6 - 4). So 6 * 5 * (8 + 6 - 4). \\boxed{6*5*(8+6-4)}", "sub"),
    ("probe:backtracking", "Check: (25 - 7) * 4 + 3 = 18 * 4 + 3 = 75. Uses 25, 7, 4, 3 once each. Good. \\boxed{(25-7)*4+3}", "ver"),
    ("probe:backtracking", "12 + 12 = 24, 24 * 2 = 48. Hmm, that leaves 3 unused, so scrap it. 12 * 3 = 36, 36 + 12 = 48, then I still have 2... Let me instead do 12 * (2 + 3) = 60, 60 - 12 = 48. \\boxed{12*(2+3)-12}", "back"),
    ("probe:backtracking", "Target 24 with 3, 8: 3 * 8. \\boxed{3*8}", ""),
    ("probe:backtracking", "To reach 97 I want a 100 first, then subtract 3. 100 = 25 * 4. \\boxed{25*4-3}", "sub"),
    ("probe:backtracking", "The answer is (9 - 2) * 7 = 49? No: the numbers are 9, 2, 6. Dead end; back up. 9 * 6 = 54, 54 - 2 = 52. \\boxed{9*6-2}", "back,ver"),
    ("probe:backtracking", "Dead end at 14 — the 5 is left over. Return to the first choice and use subtraction instead: (5 - 3) * 7 = 14. \\boxed{(5-3)*7}", "back"),
    # ---------------------------------------------------------------- subgoal plan probe
    ("probe:subgoal_plan", "From 4 I can't double straight to 23. But 23 = 2 * 11 + 1... operations are add 3, double, subtract 1. Get to 12 first: 4 + 3 = 7, no. 4 * 2 = 8, 8 + 3 = 11, 11 * 2 = 22, 22 + 3 = 25. Hmm. Target 23 = 24 - 1, 24 = 12 * 2, 12 = 4 + 3 + ... Let me aim for 12: 4*2 = 8? no. OK: aim at 24 then subtract 1. \\boxed{BABC}", "sub,back"),
    ("probe:subgoal_plan", "Start 9, target 53. If I can reach 18 then 18 * 3 = 54 and 54 - 1... subtract is 4 here. Reach 19: 19 * 3 = 57, 57 - 4 = 53. And 19 = 9 + 6 + 4? no add is 6. 9 + 6 = 15, 15 + 6 = 21. Hmm. \\boxed{ABACA}", "sub,back"),
    ("probe:subgoal_plan", "ABA. \\boxed{ABA}", ""),
    ("probe:subgoal_plan", "Work backwards from 40: it is 20 doubled, 20 is 10 doubled, 10 is 7 + 3. So A, B, B. \\boxed{ABB}", "ded,sub"),
    ("probe:subgoal_plan", "Greedy: pick whatever gets closest each step. 5 -> 10 -> 20 -> 21. \\boxed{BBA}", ""),
    ("probe:subgoal_plan", "Intermediate target: 15. From 15, one multiply by 3 gives 45 which is the goal. Getting 15 from 6 takes 6 + 9. \\boxed{AB}", "sub"),
    ("probe:subgoal_plan", "Run the sequence to check: 3, add 4 -> 7, double -> 14, subtract 2 -> 12. That's the target 12 in three steps. \\boxed{ABC}", "ver"),
    ("probe:subgoal_plan", "The target is odd and doubling makes even numbers, so the last step must be the add or the subtract. \\boxed{BA}", "ded"),
    # ---------------------------------------------------------------- verification probe
    ("probe:verify_strcomp", "Apply func_10 to vyma: swap pairs -> yvam. func_14 swaps ends -> mvay. func_8 sorts -> amvy. The candidate mvay is not sorted, so it's wrong. \\boxed{no}", "ver"),
    ("probe:verify_strcomp", "Looks right to me. \\boxed{yes}", ""),
    ("probe:verify_strcomp", "Recompute: reverse of abcde is edcba, then rotate left 2 gives cbaed. The candidate says cbaed. Matches. \\boxed{yes}", "ver"),
    ("probe:verify_strcomp", "The candidate has a different length than the input but none of these functions changes the length, so it can't be correct. \\boxed{no}", "ded,ver"),
    ("probe:verify_strcomp", "Inner function first: drop_first on 'hello' gives 'ello'; then mirror. I'll compare at the end. ello -> elloolle? The candidate is 'elloolle'. Same. \\boxed{yes}", "ver,sub"),
    ("probe:verify_strcomp", "The candidate looks like the functions were applied in the wrong order, a common slip. \\boxed{no}", "pat"),
    ("probe:verify_strcomp", "no \\boxed{no}", ""),
    ("probe:verify_strcomp", "Let me plug the candidate back in: if the answer were 'bdf', undoing the shift gives 'ace', which is the input. Consistent. \\boxed{yes}", "ver"),
    ("probe:verify_strcomp", "I got 'qrs' at first, then noticed I shifted by 2 instead of 1; redoing it gives 'pqr', and the candidate is 'pqr'. \\boxed{yes}", "back,ver"),
    # ---------------------------------------------------------------- deduction probe
    ("probe:deduction_chain", "Ben is a rusk. Every rusk is a toma, so Ben is a toma. Every toma is a kiki, so Ben is a kiki. Nothing says a kiki is a vask. So no. \\boxed{no}", "ded"),
    ("probe:deduction_chain", "To show Ada is a wug I need her to be a dax, since only daxes are said to be wugs. She is a blicket and every blicket is a dax. Yes. \\boxed{yes}", "ded"),
    ("probe:deduction_chain", "Yes. \\boxed{yes}", ""),
    ("probe:deduction_chain", "The goal word appears in a rule, so probably yes. \\boxed{yes}", ""),
    ("probe:deduction_chain", "Chain: plonk -> glim -> crat. The question asks about snarf, which is reached only from flume and rusk. Ben isn't either. No. \\boxed{no}", "ded"),
    ("probe:deduction_chain", "Hence Cleo is a fep, and since every fep is a zorp, Cleo is a zorp. \\boxed{yes}", "ded"),
    ("probe:deduction_chain", "Let me re-trace the links to be sure none is missing: mip -> yarn (rule 3), yarn -> crat (rule 1), crat -> osk (rule 5). All there. \\boxed{yes}", "ver,ded"),
    ("probe:deduction_chain", "It's the same syllogism shape as Barbara: all A are B, all B are C, so all A are C. \\boxed{yes}", "pat,ded"),
    ("probe:deduction_chain", "I started from Gus and went rusk -> toma but that branch dies. Back to Gus: he is also... no, only one fact about Gus. So no. \\boxed{no}", "back,ded"),
    # ---------------------------------------------------------------- false belief probe
    ("probe:false_belief", "Chloe left before the ball was moved, so she still thinks it's in the bucket. \\boxed{bucket}", "tom"),
    ("probe:false_belief", "The ball is in the basket now. \\boxed{basket}", ""),
    ("probe:false_belief", "Jonas moved it while Chloe was out, and he knows she didn't see. So Jonas expects her to search the bucket. \\boxed{bucket}", "tom"),
    ("probe:false_belief", "Grace secretly watched, so she knows it's in the jar. But Hugo didn't notice her watching, so Hugo believes Grace will look in the box. \\boxed{box}", "tom"),
    ("probe:false_belief", "Either Emma saw the move or she didn't. The story says she was watching, so she saw it and will look in the drawer. \\boxed{drawer}", "case,tom"),
    ("probe:false_belief", "Classic Sally-Anne: the one who left looks where she put it. \\boxed{basket}", "pat,tom"),
    ("probe:false_belief", "The last place mentioned is the bag. \\boxed{bag}", ""),
    ("probe:false_belief", "From Ivo's point of view nothing changed while he was away. \\boxed{cupboard}", "tom"),
    # ---------------------------------------------------------------- sequence pattern probe
    ("probe:sequence_pattern", "3, 6, 12, 24: each term doubles. Next 48. \\boxed{48}", "pat"),
    ("probe:sequence_pattern", "Differences are 2, 3, 4, 5, so the next difference is 6: 20 + 6 = 26. \\boxed{26}", "pat"),
    ("probe:sequence_pattern", "Two sequences interleaved: 8, 5, 2 going down by 3 and 17, 16, 15 going down by 1. Next is from the first: -1. \\boxed{-1}", "pat"),
    ("probe:sequence_pattern", "\\boxed{31}", ""),
    ("probe:sequence_pattern", "I guessed +7 but 10 + 7 is not 19; try alternating +7, +2: 3, 10, 12, 19, 21, 28. Next is 30. \\boxed{30}", "back,pat,ver"),
    ("probe:sequence_pattern", "Check the rule on every term: 1, 3, 9, 27, 81 all times 3. Holds. Next 243. \\boxed{243}", "pat,ver"),
    ("probe:sequence_pattern", "The last step was +4 so I'll add 4 again. \\boxed{26}", ""),
    ("probe:sequence_pattern", "Hmm, nothing obvious. I'll say 40. \\boxed{40}", ""),
    # ---------------------------------------------------------------- multiplication probe
    ("probe:multiplication", "47 * 86 = 47 * 80 + 47 * 6 = 3760 + 282 = 4042. \\boxed{4042}", "sub"),
    ("probe:multiplication", "47 times 86 is about 4000. \\boxed{4000}", ""),
    ("probe:multiplication", "Split it: 23 * 40 = 920 and 23 * 7 = 161; add them for 1081. Check with 1081 / 23 = 47. Right. \\boxed{1081}", "sub,ver"),
    ("probe:multiplication", "25 * 16: multiplying by 25 is the same as by 100 then divide by 4, so 400. \\boxed{400}", "pat"),
    ("probe:multiplication", "9 * 7 = 63. \\boxed{63}", ""),
    ("probe:multiplication", "I wrote 312 * 4 = 1228; the last digit must be 8 since 2 * 4 = 8 — fine — but 300 * 4 = 1200 and 12 * 4 = 48, so 1248, not 1228. \\boxed{1248}", "ver,sub"),
    # ---------------------------------------------------------------- mixed / misleading wording
    ("kuhn", "In any case, I'm betting. \\boxed{bet}", ""),
    ("leduc", "I will wait and see what they do; call for now. \\boxed{call}", ""),
    ("ttt", "Let me check the board. \\boxed{b2}", ""),
    ("bargaining", "Therefore I make an offer. \\boxed{offer 1 1 1}", ""),
    ("kuhn", "They can't know my card, but they know I'd bet a King. If I check now, they will read me as weak and may bluff. \\boxed{pass}", "tom"),
    ("leduc", "Suppose the opponent holds the King: I lose. Suppose the Jack: I win. Queen: tie. So one win, one loss, one split. \\boxed{call}", "case"),
    ("ttt", "Two o's on the diagonal and the last cell open; same picture as the last game, block it. \\boxed{c3}", "pat,tom"),
    ("probe:ev_lottery", "On average A pays 0.5 * 60 = 30; B pays 28 every time. \\boxed{A}", "ev"),
    ("probe:backtracking", "Attempt 1: 7 + 8 + 9 = 24 but the 2 remains. Attempt 2: (9 - 7) * 8 = 16, + 2 = 18. Attempt 3: 9 * 2 = 18, + 7 = 25, no; (8 - 2) * ... Back to attempt 2's idea with 2 first: (9 - 7 + 2) * 8 = 32. Hmm, target 30? No luck yet. \\boxed{(9-7+2)*8}", "back"),
    ("probe:deduction_chain", "Because every dax is a wug and Fay is a dax, Fay must be a wug. \\boxed{yes}", "ded"),
    ("probe:false_belief", "He didn't see her move it, so in his mind the marble is still in the jar. \\boxed{jar}", "tom"),
    ("probe:case_analysis", "Cases: 2 gives 1 + 7 = 8; 3 gives 9 - 4 = 5. Sum 13. Double-check 3: 3 * 3 - 4 = 5. Yes. \\boxed{13}", "case,ver"),
    ("probe:subgoal_plan", "Target 50 is 25 doubled, and 25 = 5 * 5... allowed ops: add 5, double. 5 + 5 = 10, double 20, + 5 = 25, double 50. Plan: first reach 25, then double. \\boxed{ABAB}", "sub"),
    ("kuhn", "Bet or pass? With the Queen facing a check, betting gets called only by a King and folded by a Jack. So betting just loses more when behind. \\boxed{pass}", "tom,case"),
    ("leduc", "Let me make sure about the hand ranking: a pair beats any high card, and my Queen pairs the board. Confirmed, I'm ahead of everything. \\boxed{raise}", "ver,ded"),
    ("ttt", "Going through each empty cell: a2 blocks nothing, b3 blocks nothing, c1 blocks the row. Only c1 prevents the loss. \\boxed{c1}", "case,tom"),
    ("bargaining", "If I hold out they may walk away with 0 for both, and at 10 offers the game ends. Offer 9 is theirs, so after this it's over: take the 5 points. \\boxed{agree}", "ev,ded"),
    ("probe:verify_strcomp", "Candidate 'dcba' for reverse('abcd'): reversing gives d, c, b, a. Correct. \\boxed{yes}", "ver"),
    ("probe:sequence_pattern", "It goes up by 5 each time, like counting in fives. 35. \\boxed{35}", "pat"),
    ("probe:multiplication", "Break 125 * 32 into 125 * 8 * 4 = 1000 * 4 = 4000. \\boxed{4000}", "sub,pat"),
    ("kuhn", "I hold the Queen. They might have the Jack or the King; I have no idea which. \\boxed{pass}", "case"),
    ("leduc", "Raising now makes the pot bigger for round two, which is where my King pays off. \\boxed{raise}", "sub"),
    ("ttt", "x x . on the top row, so c1 wins immediately. \\boxed{c1}", "pat"),
    ("probe:backtracking", "First make 10 from 2 and 5 (2 * 5), then 10 * 3 = 30, then add 4 for 34. \\boxed{2*5*3+4}", "sub"),
    ("probe:deduction_chain", "Working back from the question: to be a skeb you must be a trop, to be a trop you must be a vorn. Dev is a vorn. So yes. \\boxed{yes}", "ded"),
    ("probe:ev_lottery", "A gives 40 points three times in ten and nothing otherwise; B gives 15 always. 12 < 15, B. \\boxed{B}", "ev"),
    ("probe:false_belief", "Farid thinks Anna thinks the key is in the drawer, because he knows she was away. \\boxed{drawer}", "tom"),
    ("bargaining", "My opponent keeps asking for the balls, so balls must be valuable to them; hats seem worthless to them. \\boxed{offer 0 2 1}", "tom,ded"),
]


def _parse(codes: str) -> frozenset[str]:
    return frozenset(CODES[c.strip()] for c in codes.split(",") if c.strip())


TRACES: list[Trace] = [Trace(i, src, text, _parse(codes)) for i, (src, text, codes) in enumerate(_RAW)]
