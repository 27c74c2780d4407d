"""Evaluation protocols shared by tasks: pure functions on precomputed features.

Each protocol takes features that the runner has already encoded (and cached) and returns a
flat ``dict[str, float]`` of metrics. None of them encodes images or reads files.

- :mod:`~itra_bench.protocols.classification_metrics`: ``classification_metrics`` (acc1, acc5,
  mean_per_class_recall) from class scores; the other classification protocols report it.
- :mod:`~itra_bench.protocols.zeroshot`: ``build_zeroshot_classifier`` (prompt-template
  ensembles) and ``zeroshot_classification``.
- :mod:`~itra_bench.protocols.retrieval`: ``retrieval_metrics`` (image and text retrieval
  recall@k with several captions per image), computed in chunks.
- :mod:`~itra_bench.protocols.linear_probe`: ``linear_probe`` (multinomial logistic regression
  with the L2 strength chosen on a validation split), ``fit_logistic_regression`` and
  ``stratified_split``.
- :mod:`~itra_bench.protocols.knn`: ``knn_classification`` (cosine k-NN with uniform,
  inverse-distance or softmax-temperature votes).
- :mod:`~itra_bench.protocols.clustering`: ``clustering_scores`` (k-means, then NMI and AMI).
- :mod:`~itra_bench.protocols.similarity`: cosine of paired embeddings, Spearman and Pearson
  against gold scores (STS, word similarity), triplet accuracy.

A protocol that a single benchmark uses lives in that benchmark's folder, beside its task
(MS MARCO's ranking, SNLI-VE's entailment, TAP-C's VQA accuracy: ``tasks/<benchmark>/``).

Import the function from its module, e.g.
``from itra_bench.protocols.retrieval import retrieval_metrics``.
"""
