from backhaul.lab.pinger import parse

OUT = """PING 10.50.0.2 (10.50.0.2) 56(84) bytes of data.
64 bytes from 10.50.0.2: icmp_seq=1 ttl=64 time=0.8 ms
no answer yet for icmp_seq=2
64 bytes from 10.50.0.2: icmp_seq=3 ttl=64 time=0.8 ms
64 bytes from 10.50.0.2: icmp_seq=4 ttl=64 time=0.8 ms

--- 10.50.0.2 ping statistics ---
5 packets transmitted, 3 received, 40% packet loss, time 200ms
"""


def test_counts_missing_replies_but_not_the_last_request_in_flight():
    result = parse(OUT)
    assert (result.sent, result.lost) == (5, 1)
    assert abs(result.gap_seconds - 0.05) < 1e-9


def test_no_output_means_nothing_measured():
    assert parse("").sent == 0
