from backhaul.lab.pinger import IN_FLIGHT, parse


def _output(sent: int, missing: set[int]) -> str:
    lines = ["PING 10.50.0.2 (10.50.0.2) 56(84) bytes of data."]
    for seq in range(1, sent + 1):
        if seq in missing:
            lines.append(f"no answer yet for icmp_seq={seq}")
        else:
            lines.append(f"64 bytes from 10.50.0.2: icmp_seq={seq} ttl=64 time=0.8 ms")
    got = sent - len(missing)
    lines += ["", "--- 10.50.0.2 ping statistics ---", f"{sent} packets transmitted, {got} received"]
    return "\n".join(lines) + "\n"


def test_counts_missing_replies_and_says_which():
    result = parse(_output(60, {2, 3, 30}))
    assert (result.sent, result.lost, result.lost_seqs) == (60, 3, [2, 3, 30])
    assert abs(result.gap_seconds - 0.15) < 1e-9


def test_requests_still_within_their_reply_time_when_stopped_are_not_judged():
    # A reply may take longer than the 50 ms between two requests (seen: 95 ms under load), so
    # the request before the last one can be in flight too when ping is stopped. stop() waits
    # out the reply time after the flow, so that only requests the flow did not see are left.
    sent = 60
    result = parse(_output(sent, {sent - 1, sent - IN_FLIGHT + 1}))
    assert (result.sent, result.lost) == (sent, 0)
    assert parse(_output(sent, {sent - IN_FLIGHT})).lost == 1


def test_no_output_means_nothing_measured():
    assert parse("").sent == 0
