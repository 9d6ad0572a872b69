"""Exact laws: scores, log-densities, posteriors, streaming and validation (float64)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import jaxdiff as jd

D = 3
_rng = np.random.default_rng(0)
POINTS = _rng.normal(size=(40, D))
MEANS = _rng.normal(size=(3, D)) * 2
A = _rng.normal(size=(3, D, D))
COVS = A @ np.swapaxes(A, 1, 2) / D + 0.05 * np.eye(D)
SING_COV = np.diag([1.0, 0.5, 0.0])  # data on a plane
WEIGHTS = np.array([0.2, 0.5, 0.3])

LAWS = {
    "pointcloud": jd.PointCloud(POINTS),
    "pointcloud-streamed": jd.PointCloud(POINTS, chunk_size=7),  # 40 = 5*7 + 5: a ragged last chunk
    "gmm-iso": jd.GaussianMixture(MEANS, np.array([0.3, 0.0, 1.0]), WEIGHTS),  # one Dirac component
    "gmm-full": jd.GaussianMixture(MEANS, covs=COVS, weights=WEIGHTS),
    "gaussian-singular": jd.Gaussian(np.array([1.0, -1.0, 0.5]), SING_COV),
}
PROCESSES = {"OU": jd.OU(), "VP": jd.VP(), "SubVP": jd.SubVP(), "CosineVP": jd.CosineVP(), "VE": jd.VE()}


def _query(law, t_index):
    # Near the data at small t (where densities are sharp), further out later.
    base = np.asarray(LAWS["pointcloud"].points[3]) if "pointcloud" in law else np.array([1.0, -1.0, 0.5])
    return jnp.asarray(base + (0.002 if t_index == 0 else 0.4) * np.array([1.0, -0.5, 0.3]))


@pytest.mark.parametrize("pname", PROCESSES)
@pytest.mark.parametrize("lname", LAWS)
def test_score_is_gradient_of_log_prob(lname, pname):
    law, p = LAWS[lname], PROCESSES[pname]
    score = jd.ExactScore(p, law)

    @jax.jit
    def both(t, x):
        g = jax.grad(lambda y: law.noised(p, t).log_prob(y))(x)
        return g, score(t, x)

    for i, t in enumerate([1e-5, 0.37 * float(p.T), float(p.T)]):
        x = _query(lname, i)
        g, s = both(jnp.array(t), x)
        np.testing.assert_allclose(s, g, rtol=1e-7, atol=1e-9 * float(jnp.max(jnp.abs(g))) + 1e-12)


@settings(max_examples=25, deadline=None)
@given(t=st.floats(1e-4, 5.0), x=st.lists(st.floats(-4, 4), min_size=D, max_size=D))
def test_score_gradient_property_gmm_full(t, x):
    """For any t in (0, T] and x: score == grad log p_t and Tweedie (jitted once)."""
    s, g, den, twd = _gmm_full_checks(jnp.array(t), jnp.array(x))
    np.testing.assert_allclose(s, g, rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(den, twd, rtol=1e-7, atol=1e-9)


@jax.jit
def _gmm_full_checks(t, x):
    law, p = LAWS["gmm-full"], jd.OU()
    nl = law.noised(p, t)
    s = nl.score(x)
    return s, jax.grad(nl.log_prob)(x), nl.denoise(x), (x + p.sigma2(t) * s) / p.alpha(t)


@pytest.mark.parametrize("lname", LAWS)
def test_tweedie_denoiser(lname):
    law, p = LAWS[lname], jd.VP()
    score = jd.ExactScore(p, law)
    t = jnp.array(0.2)
    x = _query(lname, 1)
    expected = (x + p.sigma2(t) * score(t, x)) / p.alpha(t)
    np.testing.assert_allclose(score.denoise(t, x), expected, rtol=1e-10)
    np.testing.assert_allclose(law.noised(p, t).posterior(x).mean(), expected, rtol=1e-10)


def test_log_prob_against_scipy():
    p, t = jd.OU(), jnp.array(0.3)
    a, s2 = float(p.alpha(t)), float(p.sigma2(t))
    x = np.array([0.4, -0.2, 1.1])
    # Gaussian mixture with full covariances
    ref = logsumexp(
        [
            np.log(w) + multivariate_normal(a * m, a**2 * c + s2 * np.eye(D)).logpdf(x)
            for w, m, c in zip(WEIGHTS, MEANS, COVS)
        ]
    )
    np.testing.assert_allclose(LAWS["gmm-full"].noised(p, t).log_prob(jnp.array(x)), ref, rtol=1e-12)
    # point cloud: equal-weight isotropic mixture
    ref = logsumexp([multivariate_normal(a * q, s2 * np.eye(D)).logpdf(x) for q in POINTS]) - np.log(
        len(POINTS)
    )
    for name in ("pointcloud", "pointcloud-streamed"):
        np.testing.assert_allclose(LAWS[name].noised(p, t).log_prob(jnp.array(x)), ref, rtol=1e-12)
    # singular Gaussian at t = 0 refuses; at t > 0 it is a plain Gaussian
    ref = multivariate_normal(a * np.array([1.0, -1.0, 0.5]), a**2 * SING_COV + s2 * np.eye(D)).logpdf(x)
    np.testing.assert_allclose(LAWS["gaussian-singular"].noised(p, t).log_prob(jnp.array(x)), ref, rtol=1e-12)
    # a non-singular law has a density at t = 0
    ref = logsumexp(
        [np.log(w) + multivariate_normal(m, c).logpdf(x) for w, m, c in zip(WEIGHTS, MEANS, COVS)]
    )
    np.testing.assert_allclose(LAWS["gmm-full"].log_prob(jnp.array(x)), ref, rtol=1e-12)


@pytest.mark.parametrize("lname", ["gmm-iso", "gmm-full", "gaussian-singular", "pointcloud"])
def test_posterior_covariance_second_tweedie(lname):
    """Cov[X0 | Xt = x] = (sigma^2/alpha^2)(I + sigma^2 Hess log p_t(x)) — an autodiff identity."""
    law, p, t = LAWS[lname], jd.OU(), jnp.array(0.25)
    x = _query(lname, 1)
    a, s2 = p.alpha(t), p.sigma2(t)
    post = law.noised(p, t).posterior(x)
    w, m = post.weights, post.means
    mu = w @ m
    cov = jnp.einsum("k,ki,kj->ij", w, m - mu, m - mu)
    if post.scale is not None:
        L = post.scale[:, None, None] * jnp.eye(D) if post.scale.ndim == 1 else post.scale
        cov = cov + jnp.einsum("k,kij,klj->il", w, L, L)
    H = jax.hessian(law.noised(p, t).log_prob)(x)
    np.testing.assert_allclose(cov, s2 / a**2 * (jnp.eye(D) + s2 * H), rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-12)


def test_streamed_equals_dense_and_differentiates():
    rng = np.random.default_rng(1)
    pts = jnp.asarray(rng.normal(size=(5003, 5)))  # a prime-ish N: ragged last chunk
    dense, streamed = jd.PointCloud(pts, chunk_size=5003), jd.PointCloud(pts, chunk_size=256)
    assert streamed.chunks.shape[0] == 20 and dense.chunks.shape[0] == 1
    p, t = jd.OU(), jnp.array(0.05)
    xs = jnp.asarray(rng.normal(size=(64, 5)))

    def scores(law, t, xs):
        return jax.vmap(jd.ExactScore(p, law), in_axes=(None, 0))(t, xs)

    f = jax.jit(scores)
    np.testing.assert_allclose(f(streamed, t, xs), f(dense, t, xs), rtol=1e-11, atol=1e-11)
    lp = jax.jit(jax.vmap(lambda law, x: law.noised(p, t).log_prob(x), in_axes=(None, 0)))
    np.testing.assert_allclose(lp(streamed, xs), lp(dense, xs), rtol=1e-12)
    # gradients through the stream: w.r.t. queries, time and the points themselves
    loss = lambda law, t, xs: jnp.sum(scores(law, t, xs) ** 2)
    g_s = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(streamed, t, xs)
    g_d = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(dense, t, xs)
    np.testing.assert_allclose(g_s[1], g_d[1], rtol=1e-9)
    np.testing.assert_allclose(g_s[2], g_d[2], rtol=1e-9, atol=1e-9)
    gp_s = g_s[0].chunks.reshape(-1, 5)[:5003]
    np.testing.assert_allclose(gp_s, g_d[0].chunks[0], rtol=1e-8, atol=1e-9)
    # and the time-gradient agrees with finite differences
    h = 1e-6
    fd = (loss(dense, t + h, xs) - loss(dense, t - h, xs)) / (2 * h)
    np.testing.assert_allclose(g_d[1], fd, rtol=1e-5)


def test_float32_far_queries_stay_finite():
    """t = 1e-6, queries at |x| = 1e3 from every data point, d = 3072, float32."""
    d = 3072
    pts = jax.random.normal(jax.random.PRNGKey(0), (200, d), jnp.float32)
    xs = 1e3 * jax.random.normal(jax.random.PRNGKey(1), (4, d), jnp.float32) / float(np.sqrt(d))
    for law in (jd.PointCloud(pts), jd.PointCloud(pts, chunk_size=64)):
        for p in (jd.OU(), jd.VP(), jd.VE()):
            t = jnp.float32(1e-6)
            s = jax.vmap(jd.ExactScore(p, law), in_axes=(None, 0))(t, xs)
            lp = jax.vmap(law.noised(p, t).log_prob)(xs)
            assert s.dtype == jnp.float32
            assert bool(jnp.all(jnp.isfinite(s))) and bool(jnp.all(jnp.isfinite(lp))), type(p).__name__


def test_sample_moments():
    key = jax.random.PRNGKey(3)
    law = LAWS["gmm-full"]
    n = 40000
    xs = np.asarray(law.sample(key, n))
    mean, cov = np.asarray(law.mean()), np.asarray(law.covariance())
    se = np.sqrt(np.diag(cov) / n)
    assert np.all(np.abs(xs.mean(0) - mean) < 4 * se)
    np.testing.assert_allclose(np.cov(xs.T), cov, atol=6 * np.sqrt(2 / n) * np.abs(cov).max())
    # noised samples: mean alpha m, covariance alpha^2 C + sigma^2 I
    p, t = jd.VP(), jnp.array(0.3)
    ys = np.asarray(law.noised(p, t).sample(key, n))
    a, s2 = float(p.alpha(t)), float(p.sigma2(t))
    cov_t = a**2 * cov + s2 * np.eye(D)
    assert np.all(np.abs(ys.mean(0) - a * mean) < 4 * np.sqrt(np.diag(cov_t) / n))
    np.testing.assert_allclose(np.cov(ys.T), cov_t, atol=6 * np.sqrt(2 / n) * np.abs(cov_t).max())
    # batch-size independence
    np.testing.assert_array_equal(law.sample(key, 5), law.sample(key, 50)[:5])
    # singular Gaussian: samples stay on the plane x3 = 0.5
    zs = np.asarray(LAWS["gaussian-singular"].sample(key, 100))
    np.testing.assert_allclose(zs[:, 2], 0.5, atol=1e-12)


@pytest.mark.parametrize("chunk_size", [5, 12])
def test_pointcloud_posterior_sampling_frequencies(chunk_size):
    """Streamed draws (reservoir over chunks, inverse CDF within) follow the posterior
    weights (chi-square test, 99.9%), with ragged chunks and in one dense pass."""
    pts = jnp.asarray(np.random.default_rng(2).normal(size=(12, 2)))
    law = jd.PointCloud(pts, chunk_size=chunk_size)
    p, t = jd.OU(), jnp.array(0.6)
    x = jnp.array([0.3, -0.4])
    w = np.asarray(law.noised(p, t).posterior(x).weights)
    keys = jax.random.split(jax.random.PRNGKey(4), 20000)
    idx = np.asarray(jax.jit(jax.vmap(lambda k: law.posterior_index(k, p.alpha(t), p.sigma(t), x)))(keys))
    counts = np.bincount(idx, minlength=12)
    expected = w * len(keys)
    keep = expected > 5
    chi2 = np.sum((counts[keep] - expected[keep]) ** 2 / expected[keep])
    from scipy.stats import chi2 as chi2_dist

    assert chi2 < chi2_dist.ppf(0.999, keep.sum() - 1), (chi2, counts, expected)
    # posterior_sample returns the drawn point itself
    y = law.noised(p, t).posterior_sample(keys[0], x)
    assert np.min(np.linalg.norm(np.asarray(pts) - np.asarray(y), axis=1)) == 0.0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: jd.PointCloud(np.zeros((0, 2))), "empty"),
        (lambda: jd.PointCloud(np.zeros(5)), "points"),
        (lambda: jd.PointCloud(np.array([[0.0, np.nan]])), "NaN"),
        (lambda: jd.PointCloud(POINTS, query_split=0), "query_split"),
        (lambda: jd.PointCloud(jd.PointCloud(POINTS), chunk_size=3), "chunk_size"),
        (lambda: jd.GaussianMixture(MEANS, np.array([0.1, -0.2, 0.3])), "stds"),
        (lambda: jd.GaussianMixture(MEANS, np.array([0.1, np.inf, 0.3])), "stds"),
        (lambda: jd.GaussianMixture(MEANS, 0.5, np.array([0.5, 0.5, 0.5])), "sum to one"),
        (lambda: jd.GaussianMixture(MEANS, 0.5, np.array([0.5, 0.5])), "weights"),
        (lambda: jd.GaussianMixture(MEANS, np.array([0.1, 0.2])), "stds"),
        (lambda: jd.GaussianMixture(MEANS), "exactly one"),
        (lambda: jd.GaussianMixture(MEANS, covs=-COVS), "positive semi-definite"),
        (lambda: jd.Gaussian(np.zeros(3), np.eye(2)), "cov"),
        (lambda: jd.Gaussian(np.zeros(2), np.array([[1.0, 2.0], [0.0, 1.0]])), "symmetric"),
    ],
)
def test_bad_laws(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_bad_queries_and_times():
    law, p = LAWS["pointcloud"], jd.OU()
    score = jd.ExactScore(p, law)
    x = jnp.zeros(D)
    with pytest.raises(ValueError, match="t.*> 0"):
        score(0.0, x)
    with pytest.raises(ValueError, match="t.*> 0"):
        law.noised(p, 0.0)
    with pytest.raises(ValueError, match="<= T"):
        score(p.T + 1.0, x)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        score(0.5, jnp.zeros(4))
    with pytest.raises(ValueError, match="vmap"):
        score(0.5, jnp.zeros((8, 3)))
    with pytest.raises(ValueError, match="no density"):
        law.log_prob(x)
    with pytest.raises(ValueError, match="`n`"):
        law.sample(jax.random.PRNGKey(0), 0)
    with pytest.raises(ValueError, match="process"):
        jd.ExactScore("OU", law)
    # traced times are checked at run time inside jit
    with pytest.raises(Exception, match="must be > 0"):
        eqx.filter_jit(score)(jnp.array(0.0), x)
    with pytest.raises(Exception, match="<= T"):
        eqx.filter_jit(score)(jnp.array(7.0), x)
    # a law with a density accepts t = 0
    g = jd.ExactScore(p, LAWS["gmm-full"])(0.0, x)
    np.testing.assert_allclose(g, LAWS["gmm-full"].score(x), rtol=1e-12)


def _closed_form_float64(points, alpha, s2, xs):
    """Score, log-density and posterior weights of (1/N) sum N(alpha x_i, s2 I), NumPy float64."""
    d2 = np.sum((xs[:, None, :] - alpha * points[None]) ** 2, axis=-1)
    logits = -0.5 * d2 / s2
    lse = logsumexp(logits, axis=1)
    w = np.exp(logits - lse[:, None])
    lp = lse - np.log(len(points)) - 0.5 * points.shape[1] * np.log(2 * np.pi * s2)
    return (alpha * (w @ points) - xs) / s2, lp, w


@pytest.mark.parametrize("offset", [1e2, 1e4, 1e6])
def test_far_from_the_origin_float32(offset):
    """20 points at `offset` from the origin, float32, t = 0.01: scores, log-densities and
    denoisers match a float64 evaluation of the same float32 inputs as closely as at the
    origin (the expanded form |x|^2 - 2 x.y + |y|^2 was off by 4.5e-3 at 1e2, 18x at 1e4)."""
    rng = np.random.default_rng(5)
    pts = (rng.normal(size=(20, 3)) + offset).astype(np.float32)
    p, t = jd.OU(), jnp.float32(0.01)
    a, s2 = float(p.alpha(t)), float(p.sigma2(t))
    P = pts.astype(np.float64)
    xs = (a * P + 0.3 * np.sqrt(s2) * rng.normal(size=P.shape)).astype(np.float32)  # query i near point i
    ref, ref_lp, w = _closed_form_float64(P, a, s2, xs.astype(np.float64))
    assert np.all(np.argmax(w, axis=1) == np.arange(20))
    laws = {
        "PointCloud": jd.PointCloud(pts),
        "PointCloud(chunk_size=7)": jd.PointCloud(pts, chunk_size=7),
        "GaussianMixture(stds=0)": jd.GaussianMixture(pts, np.float32(0.0)),
    }
    for name, law in laws.items():
        nl = law.noised(p, t)
        s, lp, den = (np.asarray(jax.vmap(f)(jnp.asarray(xs)), np.float64)
                      for f in (nl.score, nl.log_prob, nl.denoise))
        assert law.dim == 3 and nl.score(jnp.asarray(xs[0])).dtype == jnp.float32
        assert np.max(np.abs(s - ref)) / np.max(np.abs(ref)) < 2e-5, name
        np.testing.assert_allclose(lp, ref_lp, rtol=1e-5, atol=1e-4, err_msg=name)
        picked = np.argmin(np.sum((den[:, None] - P[None]) ** 2, axis=-1), axis=1)
        assert np.all(picked == np.arange(20)), (name, picked)


def test_centring_keeps_points_exact():
    """Far clouds are stored relative to their mean, exactly (Sterbenz): the points and the
    posterior draws come back bit for bit; a cloud around the origin is not shifted."""
    far = (np.random.default_rng(6).normal(size=(9, 2)) + [3e5, -7.0]).astype(np.float32)
    law = jd.PointCloud(far, chunk_size=4)
    assert float(law.center[0]) != 0.0 and float(law.center[1]) != 0.0
    np.testing.assert_array_equal(law.points, far)
    np.testing.assert_array_equal(LAWS["pointcloud"].center, np.zeros(D))
    p, t = jd.VP(), jnp.float32(0.3)
    x = jnp.asarray(far[4] * p.alpha(t))
    keys = jax.random.split(jax.random.PRNGKey(0), 16)
    draws = jax.vmap(lambda k: law.noised(p, t).posterior_sample(k, x))(keys)
    assert all(np.any(np.all(np.asarray(y) == far, axis=1)) for y in draws)


def test_draws_do_not_depend_on_chunk_size():
    """Same key, same samples, whatever the chunking: posterior draws and the exact sampler."""
    pts = np.random.default_rng(8).normal(size=(40, 2))
    dense, chunked = jd.PointCloud(pts), jd.PointCloud(pts, chunk_size=7)  # 40 = 5*7 + 5: ragged
    assert dense.chunks.shape[0] == 1 and chunked.chunks.shape[0] == 6
    p, t = jd.VP(), jnp.array(0.4)
    keys = jax.random.split(jax.random.PRNGKey(9), 200)
    xs = jnp.asarray(np.random.default_rng(10).normal(size=(200, 2)))
    draw = jax.jit(jax.vmap(lambda law, k, x: law.noised(p, t).posterior_sample(k, x), in_axes=(None, 0, 0)))
    a, b = draw(dense, keys, xs), draw(chunked, keys, xs)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(np.asarray(a), axis=0)) > 10  # the draws do vary
    key = jax.random.PRNGKey(11)
    run = lambda law: jd.sample(key, None, p, (64, 2), sampler=jd.ExactSampler(law), steps=6)
    np.testing.assert_array_equal(run(dense), run(chunked))
