"""Serving: the live models' state as a stream, and recommendations from it.

- :mod:`stream.serving.records`: the model-state topic's records (the contract between the
  consumer that publishes and the servers that follow);
- :mod:`stream.serving.export`: what changed in a learner since the last publication;
- :mod:`stream.serving.state`: a server's copy of the models, built from the records;
- :mod:`stream.serving.index`: the approximate-nearest-neighbour index over item vectors;
- :mod:`stream.serving.recommender`: top-K, cold start, exploration and point predictions.

Nothing here knows about Kafka: :mod:`stream.kafka.model_state` moves the bytes.
"""
