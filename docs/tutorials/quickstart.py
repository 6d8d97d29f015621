"""Tutorial: fit a posterior from arrays, sample it, save it and load it back.

The data are simulations of the Gaussian-linear problem (x ~ N(0, I) in 4-D,
y = A x + noise in 2-D), whose posterior is known in closed form, so the fit can be
checked: C2ST against exact posterior samples is 0.5 for a perfect posterior and 1.0 for
one a classifier tells apart every time.

``VINAFLOW_DOCS_QUICK=1`` trains for a few seconds on a small data set (what the
documentation tests run); without it the fit takes about a minute.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import torch

import vinaflow
from vinaflow.evaluation import c2st
from vinaflow.problems import GaussianLinear

QUICK = os.environ.get("VINAFLOW_DOCS_QUICK") == "1"

# 1. Simulations as plain arrays: x (n, 4) parameters, y (n, 2) observations.
problem = GaussianLinear(dim_x=4, dim_y=2, noise=0.1)
g = torch.Generator().manual_seed(0)
x = problem.sample_prior(2000 if QUICK else 20000, g)
y = problem.simulate(x, g)
x, y = x.numpy(), y.numpy()
print(f"training data: x {x.shape}, y {y.shape}")

# 2. Fit a conditional INN by maximum likelihood.
posterior = vinaflow.fit(
    x, y, model="cinn", objective="nll", max_seconds=5 if QUICK else 60, seed=0, progress=False
)
print(f"trained: {posterior}")

# 3. Posterior samples for a new observation, and their log-density under the model.
x_true = problem.sample_prior(1, torch.Generator().manual_seed(1))
y_obs = problem.simulate(x_true, torch.Generator().manual_seed(2))[0].numpy()
samples = np.asarray(posterior.sample(y_obs, 1000, seed=3))  # (1 observation, 1000, 4)
print(f"samples: {samples.shape}")
log_q = np.asarray(posterior.log_prob(samples[0], y_obs))
print(f"mean log q(x | y_obs): {log_q.mean():.2f}")

# 4. Compare with the exact posterior of this observation.
exact = problem.reference_posterior(torch.as_tensor(y_obs), 1000, torch.Generator().manual_seed(4))
print(f"C2ST against the exact posterior: {c2st(exact.numpy(), samples[0]):.3f}")

# 5. Save, load, and check that the loaded posterior gives the same samples.
with tempfile.TemporaryDirectory() as tmp:
    folder = posterior.save(os.path.join(tmp, "posterior"))
    loaded = vinaflow.load(folder)
    again = np.asarray(loaded.sample(y_obs, 1000, seed=3))
    print(f"loaded posterior reproduces the samples: {np.array_equal(again, samples)}")

# 6. The scores `vinaflow run` reports, on held-out observations simulated from the problem
#    (the settings are those of the `evaluation` config section).
metrics = vinaflow.evaluate(
    posterior, problem, num_observations=3 if QUICK else 10, num_samples=1000, num_calibration=0
)
print(f"evaluate: mean C2ST {metrics['c2st']:.3f} over {metrics['num_observations']} observations")
