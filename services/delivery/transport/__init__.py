"""HTTP/2 client transport: one connection (h2 state machine) and a pool of them.

Provider logic (APNs, FCM, Web Push) lives in the senders; this package only moves
requests and answers and reports transport failures as `TransportError`s.
"""
