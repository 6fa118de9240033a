"""Score a few traces through a running scoring server with `ccapo_client.RemoteScorer`.

    CCAPO_SCORER_URL=http://127.0.0.1:8000 python examples/remote_scoring.py

Used by the `trainer` service of docker-compose.yml to check that it reaches the scorer by name.
"""

import os

from ccapo_client import RemoteScorer

TRACES = [
    {
        "prompt": "A box holds 12 muffins. How many muffins are in 11 boxes?",
        "completion": "Let me think.\nEach box holds 12 muffins, so 11 × 12 = 132 muffins.\n#### 132",
    },
    {
        "prompt": "Tom has 5 apples and buys 7 more. How many apples does he have?",
        "completion": "He starts with 5 apples.\nAfter buying, 5 + 7 = 12 apples.\nThe answer is 12",
    },
]


def main() -> None:
    url = os.environ.get("CCAPO_SCORER_URL", "http://127.0.0.1:8000")
    scorer = RemoteScorer(url, api_key=os.environ.get("CCAPO_API_KEY"))
    for result in scorer.score(TRACES):
        print(f"{result.status}: answer log-prob {result.base_logprob:.3f}")
        for span in sorted(result.spans, key=lambda s: -s.drop):
            print(f"  {span.drop:+8.3f}  {span.text!r}")
    print(f"scored by model version {scorer.last_model_version}")


if __name__ == "__main__":
    main()
