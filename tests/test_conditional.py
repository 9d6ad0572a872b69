"""Conditional generation: labelled laws, exact posteriors, guidance, posterior samplers (float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import multivariate_normal

import jaxdiff as jd
from jaxdiff.metrics import sliced_wasserstein


def _labelled_mixture():
    means = jnp.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0], [0.0, -2.0]])
    law = jd.GaussianMixture(means, jnp.array([0.5, 0.7, 0.4, 0.6]), jnp.array([0.1, 0.2, 0.3, 0.4]))
    return jd.Labelled(law, jnp.array([0, 1, 1, 0]))


def _full_mixture():
    means = jnp.array([[-1.5, 0.5], [1.0, -0.5], [0.5, 1.5]])
    covs = jnp.array([[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.4]], [[0.3, 0.0], [0.0, 0.1]]])
    return jd.GaussianMixture(means, weights=jnp.array([0.3, 0.5, 0.2]), covs=covs)


# ---- labelled laws ------------------------------------------------------------------


def test_conditional_law_at_t0_is_the_class_mixture():
    lab = _labelled_mixture()
    x = jnp.array([0.3, -0.7])
    law1 = lab.condition(1)
    # independent: scipy densities of components 1, 2 with renormalised weights 0.2, 0.3
    p = (
        0.2 * multivariate_normal.pdf(x, [2.0, 0.0], 0.49)
        + 0.3 * multivariate_normal.pdf(x, [0.0, 2.0], 0.16)
    ) / 0.5
    assert float(law1.log_prob(x)) == pytest.approx(np.log(p), rel=1e-12)
    np.testing.assert_allclose(lab.class_weights(), [0.5, 0.5], rtol=1e-12)


@pytest.mark.parametrize("kind", ["mixture", "cloud"])
def test_conditional_score_is_grad_of_bayes_log_density(kind):
    """score of X_t | y == grad_x [log p_t(x) + log p(y | X_t = x)] (Bayes), at several t."""
    if kind == "mixture":
        lab = _labelled_mixture()
    else:
        pts = jax.random.normal(jax.random.PRNGKey(1), (12, 2))
        lab = jd.Labelled(jd.PointCloud(pts), jnp.arange(12) % 3)
    process = jd.VP()
    xs = jax.random.normal(jax.random.PRNGKey(2), (5, 2))

    @jax.jit
    def both(t, cond_law, y):
        a, s = process.alpha(t), process.sigma(t)
        cond = jd.ExactScore(process, cond_law)
        bayes = jax.grad(lambda x: lab.log_prob_at(a, s, x) + lab.log_classifier_at(a, s, x, y))
        lp_bayes = lambda x: (
            lab.log_prob_at(a, s, x) + lab.log_classifier_at(a, s, x, y) - jnp.log(lab.class_weights()[y])
        )
        return (
            jax.vmap(cond, (None, 0))(t, xs),
            jax.vmap(bayes)(xs),
            jax.vmap(cond.log_prob, (None, 0))(t, xs),
            jax.vmap(lp_bayes)(xs),
        )

    for t in (0.05, 0.3, 0.9):
        for y in range(lab.n_classes):
            s1, s2, l1, l2 = both(jnp.array(t), lab.condition(y), jnp.array(y))
            np.testing.assert_allclose(s1, s2, rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(l1, l2, rtol=1e-10, atol=1e-10)


def test_classifier_probabilities_sum_to_one_and_tend_to_the_prior():
    lab = _labelled_mixture()
    process = jd.VP()
    x = jnp.array([1.0, 0.5])
    lp = lab.log_class_probs_at(process.alpha(0.2), process.sigma(0.2), x)
    assert float(jnp.sum(jnp.exp(lp))) == pytest.approx(1.0, abs=1e-12)
    clf = lab.classifier(process, 1)
    assert float(clf(0.2, x)) == pytest.approx(float(lp[1]), abs=1e-12)
    # at T the noised law forgets X_0: p(y | x_T) ~ P(Y = y) = 0.5
    assert float(jnp.exp(clf(1.0, x))) == pytest.approx(0.5, abs=1e-2)


def test_point_cloud_condition_selects_points():
    pts = jnp.arange(10.0).reshape(5, 2)
    lab = jd.Labelled(jd.PointCloud(pts), jnp.array([0, 1, 0, 1, 1]))
    np.testing.assert_array_equal(lab.condition(1).points, pts[jnp.array([1, 3, 4])])


# ---- linear observations: exact posteriors ----------------------------------------------


def test_mixture_posterior_matches_bayes_on_a_grid():
    prior = _full_mixture()
    obs = jd.LinearObservation(jnp.array([[1.0, 0.5]]), 0.3)
    y = jnp.array([0.7])
    post = jd.posterior_given(prior, obs, y)
    g = jnp.linspace(-6.0, 6.0, 301)
    X = jnp.stack(jnp.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    # Bayes on the grid, independently: prior density (scipy) times the Gaussian likelihood
    prior_pdf = sum(
        float(w) * multivariate_normal.pdf(np.asarray(X), np.asarray(m), np.asarray(c))
        for w, m, c in zip(prior.weights, prior.means, prior.covariances)
    )
    lik = multivariate_normal.pdf(np.asarray(X) @ np.array([1.0, 0.5]), 0.7, 0.09)
    bayes = prior_pdf * lik
    bayes = bayes / (bayes.sum() * float(g[1] - g[0]) ** 2)
    closed = np.exp(np.asarray(jax.vmap(post.log_prob)(X)))
    assert np.max(np.abs(closed - bayes)) < 1e-9 * np.max(bayes) + 1e-12
    # the same with a wrong observation value is far off (the check can fail)
    wrong = np.exp(np.asarray(jax.vmap(jd.posterior_given(prior, obs, y + 0.1).log_prob)(X)))
    assert np.max(np.abs(wrong - bayes)) > 1e-2 * np.max(bayes)


def test_gaussian_and_point_cloud_posteriors():
    prior = jd.Gaussian(jnp.array([1.0, -1.0, 0.0]), jnp.diag(jnp.array([1.0, 2.0, 0.5])))
    obs = jd.LinearObservation.inpainting(np.array([True, False, True]), 0.5)
    post = jd.posterior_given(prior, obs, jnp.array([2.0, 1.0]))
    assert isinstance(post, jd.Gaussian)
    # independent coordinates: observed ones shrink toward y by v / (v + s^2), the other stays
    np.testing.assert_allclose(post.mean, [1.0 + 0.8 * 1.0, -1.0, 0.5 / 0.75 * 1.0], rtol=1e-12)
    np.testing.assert_allclose(jnp.diag(post.cov), [0.2, 2.0, 0.5 * 0.25 / 0.75], rtol=1e-10)
    pts = jnp.array([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0], [3.0, 1.0, 1.0]])
    postc = jd.posterior_given(jd.PointCloud(pts), obs, jnp.array([1.0, 1.5]))
    lw = -0.5 * np.sum((np.array([1.0, 1.5]) - np.asarray(pts)[:, [0, 2]]) ** 2, 1) / 0.25
    np.testing.assert_allclose(postc.weights, np.exp(lw) / np.exp(lw).sum(), rtol=1e-10)


def test_exact_sampler_on_the_posterior_is_at_the_noise_floor():
    prior = _full_mixture()
    obs = jd.LinearObservation(jnp.array([[1.0, 0.5]]), 0.3)
    post = jd.posterior_given(prior, obs, jnp.array([0.7]))
    n, proc = 1000, jd.VP()
    xs = jd.sample(jax.random.PRNGKey(0), None, proc, (n, 2), sampler=jd.ExactSampler(post), steps=4)
    ref = post.sample(jax.random.PRNGKey(1), n)
    floors = [
        sliced_wasserstein(
            post.sample(jax.random.PRNGKey(10 + i), n),
            post.sample(jax.random.PRNGKey(20 + i), n),
            key=jax.random.PRNGKey(3),
        )
        for i in range(3)
    ]
    d = sliced_wasserstein(xs, ref, key=jax.random.PRNGKey(3))
    assert float(d) < 2.0 * max(float(f) for f in floors)
    # the prior is far from the posterior on this statistic: the check can fail
    assert float(
        sliced_wasserstein(prior.sample(jax.random.PRNGKey(4), n), ref, key=jax.random.PRNGKey(3))
    ) > 5 * float(d)


# ---- guidance -------------------------------------------------------------------------


def test_cfg_equals_classifier_guidance_with_the_exact_classifier():
    lab = _labelled_mixture()
    process = jd.VP()
    ls = jd.LabelledExactScore(process, lab)
    x = jnp.array([0.4, -0.3])
    for scale in (0.0, 1.0, 2.5):
        cfg = jd.guide(ls, 1, scale)
        cg = jd.ClassifierGuidance(ls.unconditional(), lab.classifier(process, 1), scale)
        np.testing.assert_allclose(cfg(0.4, x), cg(0.4, x), rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(jd.guide(ls, 1, 1.0)(0.4, x), ls.conditional(1)(0.4, x), rtol=1e-12)
    inter = jd.guide(ls, 1, 3.0, interval=(0.5, 0.8))
    np.testing.assert_allclose(inter(0.4, x), ls.conditional(1)(0.4, x), rtol=1e-12)
    np.testing.assert_allclose(inter(0.6, x), jd.guide(ls, 1, 3.0)(0.6, x), rtol=1e-12)


def test_pigdm_is_exact_for_an_isotropic_gaussian_prior():
    """For a prior N(m, sd^2 I), X_0 | X_t is Gaussian with variance r_t^2 I: PiGDM's
    likelihood is then exact, so it equals the score of the exact posterior law."""
    sd = 0.8
    prior = jd.Gaussian(jnp.array([0.5, -1.0, 0.2]), sd**2 * jnp.eye(3))
    obs = jd.LinearObservation(jnp.array([[1.0, 0.3, 0.0], [0.0, 1.0, -1.0]]), 0.2)
    y = jnp.array([0.4, -0.6])
    process = jd.VP()
    pig = jd.PiGDM(jd.ExactScore(process, prior), obs, y, sigma_data=sd)
    exact = jd.ExactScore(process, jd.posterior_given(prior, obs, y))
    for t, x in ((0.1, jnp.array([0.1, 0.2, 0.3])), (0.6, jnp.array([-1.0, 0.5, 2.0]))):
        np.testing.assert_allclose(pig(t, x), exact(t, x), rtol=1e-8, atol=1e-8)
    # a wrong sigma_data breaks the identity (the check can fail)
    wrong = jd.PiGDM(jd.ExactScore(process, prior), obs, y, sigma_data=1.0)
    assert float(jnp.max(jnp.abs(wrong(0.6, jnp.zeros(3)) - exact(0.6, jnp.zeros(3))))) > 1e-3


def test_dps_formula_for_a_gaussian_prior():
    sd, process = 0.8, jd.VP()
    prior = jd.Gaussian(jnp.zeros(2), sd**2 * jnp.eye(2))
    obs = jd.LinearObservation(jnp.array([[1.0, 2.0]]), 0.5)
    y = jnp.array([1.0])
    dps = jd.DPS(jd.ExactScore(process, prior), obs, y, scale=0.5)
    t, x = 0.3, jnp.array([0.2, -0.4])
    a, s2 = process.alpha(t), process.sigma2(t)
    gain = a * sd**2 / (a**2 * sd**2 + s2)  # x0_hat = gain * x, J = gain I
    r = y - obs.A @ (gain * x)
    expected = -x / (a**2 * sd**2 + s2) + 0.5 * gain * (obs.A.T @ r) / 0.25
    np.testing.assert_allclose(dps(t, x), expected, rtol=1e-10)


def test_replacement_pins_the_observed_coordinates():
    prior = _full_mixture()
    obs = jd.LinearObservation.inpainting(np.array([True, False]))
    y = jnp.array([0.9])
    process = jd.VP()
    sampler = jd.Replacement(obs, y, resample=2)
    assert sampler.nfe(5) == 10
    xs = jd.sample(
        jax.random.PRNGKey(0), jd.ExactScore(process, prior), process, (50, 2), sampler=sampler, steps=5
    )
    # x_{t_end}[0] = alpha y + sigma z: within 6 sigma(t_end) of alpha y
    assert float(jnp.max(jnp.abs(xs[:, 0] - process.alpha(1e-3) * 0.9))) < 6 * float(process.sigma(1e-3))



def _corr_gaussian():
    return jd.Gaussian(jnp.zeros(2), jnp.array([[1.0, 0.8], [0.8, 1.0]]))


def test_dps_sampler_step_is_the_papers_normalised_correction():
    """One step against the closed form for a Gaussian prior N(0, C): x0_hat = J x with
    J = alpha C (alpha^2 C + sigma^2 I)^{-1}, and the step adds 2 zeta' J^T A^T r / |r| to the
    inner DDPM step. A flipped sign, a missing 2, an unnormalised or |r|^2-normalised step
    each fail this."""
    prior, process = _corr_gaussian(), jd.VP()
    obs = jd.LinearObservation(jnp.array([[1.0, 0.5]]), 0.1)
    y = jnp.array([1.5])
    score = jd.ExactScore(process, prior)
    sampler = jd.DPSSampler(obs, y, step_size=0.3)
    assert sampler.nfe(7) == 7
    key, t, s, x = jax.random.PRNGKey(3), 0.4, 0.35, jnp.array([0.2, -0.7])
    got, _ = sampler.step(key, score, process, t, s, x, None)
    a, s2, C = process.alpha(t), process.sigma2(t), prior.cov
    J = a * C @ jnp.linalg.inv(a**2 * C + s2 * jnp.eye(2))
    r = y - obs.A @ (J @ x)
    ddpm, _ = jd.DDPM().step(key, score, process, t, s, x, None)
    np.testing.assert_allclose(got, ddpm + 2 * 0.3 * J.T @ obs.A.T @ r / jnp.linalg.norm(r), rtol=1e-10)
    # the correction reduces the residual of the denoised sample (sign)
    r_after = y - obs.A @ (J @ got)
    r_plain = y - obs.A @ (J @ ddpm)
    assert float(jnp.abs(r_after[0])) < float(jnp.abs(r_plain[0]))


def test_dps_sampler_moves_samples_to_the_exact_posterior():
    """Prior N(0, [[1, .8], [.8, 1]]), observe x_1 with noise 0.1, y = 1.5: the exact posterior
    mean is (1.485, 1.188), std (0.0995, 0.605); the prior mean is 0. zeta' = 0.05, 200 DDPM
    steps, 500 samples (standard errors of the means 0.005 and 0.03)."""
    prior, process = _corr_gaussian(), jd.VP()
    obs = jd.LinearObservation.inpainting(np.array([True, False]), 0.1)
    y = jnp.array([1.5])
    mean = jd.posterior_given(prior, obs, y).mean
    xs = jd.sample(
        jax.random.PRNGKey(1), jd.ExactScore(process, prior), process, (500, 2),
        sampler=jd.DPSSampler(obs, y, step_size=0.05), steps=200,
    )  # fmt: skip
    m = jnp.mean(xs, axis=0)
    # observed coordinate: the last step jumps by up to 2 zeta' |J| ~ 0.1 either way, so the
    # mean is allowed zeta' = 0.05 (10 standard errors) from the posterior mean
    assert abs(float(m[0] - mean[0])) < 0.05
    # unobserved coordinate, moved only through the prior's correlation (J^T): DPS is
    # approximate, so 0.2 (7 standard errors, a sixth of the prior-to-posterior distance 1.19)
    assert abs(float(m[1] - mean[1])) < 0.2
    # with the sign flipped the samples are pushed away from y: the check can fail
    flipped = jd.sample(
        jax.random.PRNGKey(1), jd.ExactScore(process, prior), process, (500, 2),
        sampler=jd.DPSSampler(obs, -y, step_size=0.05), steps=200,
    )  # fmt: skip
    assert abs(float(jnp.mean(flipped[:, 0]) - mean[0])) > 1.0

# ---- differentiability ----------------------------------------------------------------


def _fd(f, v, h=1e-5):
    return (f(v + h) - f(v - h)) / (2 * h)


def test_gradients_in_scale_and_observation_match_finite_differences():
    lab = _labelled_mixture()
    process = jd.VP()
    ls = jd.LabelledExactScore(process, lab)
    key = jax.random.PRNGKey(0)

    def f_scale(w):
        xs = jd.sample(key, jd.guide(ls, 1, w), process, (4, 2), sampler=jd.DDIM(), steps=4)
        return jnp.sum(xs**2)

    w = jnp.array(2.0)
    assert float(jax.grad(f_scale)(w)) == pytest.approx(float(_fd(f_scale, w)), rel=1e-5)

    prior = _full_mixture()
    obs = jd.LinearObservation(jnp.array([[1.0, 0.5]]), 0.3)

    def f_obs(y):
        pig = jd.PiGDM(jd.ExactScore(process, prior), obs, jnp.reshape(y, (1,)))
        xs = jd.sample(key, pig, process, (4, 2), sampler=jd.DDIM(), steps=4)
        return jnp.sum(xs[:, 0]) + jd.posterior_given(prior, obs, jnp.reshape(y, (1,))).mean() @ jnp.array(
            [1.0, 2.0]
        )

    y = jnp.array(0.7)
    assert float(jax.grad(f_obs)(y)) == pytest.approx(float(_fd(f_obs, y)), rel=1e-5)



def test_dps_sampler_gradients_in_step_size_and_y_match_finite_differences():
    prior, process = _full_mixture(), jd.VP()
    # m = 2: with one observed value the normalised step is 2 zeta' J^T A^T sign(r), flat in y
    obs = jd.LinearObservation(jnp.array([[1.0, 0.5], [0.2, -1.0]]), 0.3)
    score = jd.ExactScore(process, prior)
    key = jax.random.PRNGKey(0)

    def f(z, y):
        sampler = jd.DPSSampler(obs, jnp.array([0.3, -0.4]) + y * jnp.array([1.0, -0.5]), step_size=z)
        xs = jd.sample(key, score, process, (4, 2), sampler=sampler, steps=4)
        return jnp.sum(xs * jnp.array([1.0, -2.0]))

    z, y = jnp.array(0.4), jnp.array(0.7)
    gz, gy = jax.grad(f, argnums=(0, 1))(z, y)
    assert float(gz) == pytest.approx(float(_fd(lambda v: f(v, y), z)), rel=1e-5)
    assert float(gy) == pytest.approx(float(_fd(lambda v: f(z, v), y)), rel=1e-5)

# ---- bad input ------------------------------------------------------------------------


def test_bad_input_is_refused_clearly():
    lab = _labelled_mixture()
    process = jd.VP()
    with pytest.raises(ValueError, match="class in 0..1"):
        lab.condition(2)
    with pytest.raises(ValueError, match="class in 0..1"):
        lab.classifier(process, -1)
    with pytest.raises(ValueError, match="one label per mixture component"):
        jd.Labelled(lab.law, jnp.array([0, 1]))
    with pytest.raises(ValueError, match="noise_std"):
        jd.LinearObservation(jnp.eye(2), -0.1)
    obs = jd.LinearObservation(jnp.ones((1, 3)), 0.1)
    with pytest.raises(ValueError, match=r"shape \(m, 2\)"):
        jd.posterior_given(lab, obs, jnp.array([1.0]))
    with pytest.raises(ValueError, match=r"`y` must have shape \(1,\)"):
        jd.posterior_given(jd.Gaussian(jnp.zeros(3), jnp.eye(3)), obs, jnp.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="no unconditional branch"):
        jd.guide(jd.ExactScore(process, lab), 1, 2.0)
    with pytest.raises(ValueError, match="needs an unconditional score"):
        jd.ClassifierFreeGuidance(jd.ExactScore(process, lab), None, 2.0)
    with pytest.raises(ValueError, match="noise_std > 0"):
        jd.DPS(jd.ExactScore(process, lab), jd.LinearObservation(jnp.eye(2)), jnp.zeros(2))
    obs2 = jd.LinearObservation(jnp.array([[1.0, 0.0]]), 0.1)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="`step_size` must be finite and > 0"):
            jd.DPSSampler(obs2, jnp.ones(1), step_size=bad)
    with pytest.raises(ValueError, match="`step_size` must be a scalar"):
        jd.DPSSampler(obs2, jnp.ones(1), step_size=jnp.ones(2))
    with pytest.raises(ValueError, match=r"`y` must have shape \(1,\)"):
        jd.DPSSampler(obs2, jnp.ones(2))
    with pytest.raises(ValueError, match="`inner` must be a one-step sampler"):
        jd.DPSSampler(obs2, jnp.ones(1), inner=jd.ProbabilityFlow())
    with pytest.raises(ValueError, match="`x` has shape"):
        jd.sample(jax.random.PRNGKey(0), jd.ExactScore(process, jd.Gaussian(jnp.zeros(3), jnp.eye(3))),
                  process, (2, 3), sampler=jd.DPSSampler(obs2, jnp.ones(1)), steps=2)  # fmt: skip


# ---- command line ----------------------------------------------------------------------


def test_cli_samples_a_class_with_guidance(tmp_path, capsys):
    from jaxdiff import cli

    out = tmp_path / "s.npy"
    argv = ["sample", "--law", "ring8", "--class", "3", "--guidance", "2.0", "--n", "64", "--steps", "30"]
    assert cli.main([*argv, "--out", str(out), "--process", "vp"]) == 0
    x = np.load(out)
    centre = 2.0 * np.array([np.cos(3 * np.pi / 4), np.sin(3 * np.pi / 4)])
    # component 3 has std 0.1: every sample of that class lies within 0.6 of its centre
    assert x.shape == (64, 2) and np.max(np.linalg.norm(x - centre, axis=1)) < 0.6
    with pytest.raises(SystemExit):
        cli.main(["sample", "--law", "two-moons", "--class", "1", "--out", str(out)])
    assert "ring8 or grid25" in capsys.readouterr().err


def test_law_methods_delegate_to_the_conditional_package():
    mix = _full_mixture()
    obs = jd.LinearObservation(jnp.array([[1.0, 0.5]]), 0.3)
    a, b = mix.given(obs, jnp.array([0.7])), jd.posterior_given(mix, obs, jnp.array([0.7]))
    np.testing.assert_allclose(a.means, b.means)
    lab = jd.PointCloud(jnp.arange(8.0).reshape(4, 2)).with_labels(jnp.array([1, 0, 1, 0]))
    np.testing.assert_array_equal(lab.condition(1).points, jnp.array([[0.0, 1.0], [4.0, 5.0]]))
    assert mix.with_labels(jnp.array([0, 1, 1])).n_classes == 2


# ---- learned conditional scores -------------------------------------------------------------


def test_conditional_network_branches_and_training_input():
    process = jd.VP()
    model = jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=16, depth=1, n_classes=3)
    cs = jd.ConditionalNetworkScore(model, process, jd.EpsParam())
    x, t = jnp.array([0.3, -0.2]), 0.4
    c, xin = jd.EpsParam().c_noise(process, t), jd.EpsParam().c_in(process, t) * x
    np.testing.assert_allclose(cs.unconditional()(t, x), -model(c, xin) / process.sigma(t), rtol=1e-12)
    np.testing.assert_allclose(cs.conditional(1)(t, x), -model(c, xin, 1) / process.sigma(t), rtol=1e-12)
    assert float(jnp.max(jnp.abs(cs.conditional(1)(t, x) - cs.conditional(2)(t, x)))) > 0
    data = jax.random.normal(jax.random.PRNGKey(1), (32, 2))
    labels = np.arange(32) % 3
    trained = jd.train(
        cs, data, process, key=jax.random.PRNGKey(2), steps=3, batch_size=8, labels=labels, progress=False
    )
    assert isinstance(trained, jd.ConditionalNetworkScore)
    # the default parametrisation is NetworkScore's (EDM preconditioning)
    assert isinstance(jd.ConditionalNetworkScore(model, process).parametrisation, jd.EDMParam)
    assert np.all(np.isfinite(np.asarray(jd.guide(trained, 0, 2.0)(t, x))))
    with pytest.raises(ValueError, match="no unconditional branch"):
        jd.train(
            cs,
            data,
            process,
            key=jax.random.PRNGKey(2),
            steps=1,
            batch_size=8,
            labels=labels,
            label_dropout=0.0,
            progress=False,
        )
    with pytest.raises(ValueError, match="0..2"):
        jd.train(
            cs,
            data,
            process,
            key=jax.random.PRNGKey(2),
            steps=1,
            batch_size=8,
            labels=labels + 1,
            progress=False,
        )
    plain = jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=16, depth=1), process)
    with pytest.raises(ValueError, match="ConditionalNetworkScore"):
        jd.train(plain, data, process, key=jax.random.PRNGKey(2), steps=1, batch_size=8, labels=labels)
    with pytest.raises(ValueError, match="n_classes="):
        jd.ConditionalNetworkScore(plain.model, process)
    with pytest.raises(ValueError, match="class in 0..2"):
        cs.conditional(3)


def test_conditional_network_edm_sigma_data_is_filled_like_network_score():
    """`EDMParam()` (sigma_data None) gets the data's root mean square from `train`, as a
    `NetworkScore` does; a given sigma_data is kept."""
    process = jd.VP()
    data = jnp.array([[3.0, -1.0], [-3.0, 1.0], [3.0, 1.0], [-3.0, -1.0]])  # RMS sqrt(5)
    labels = np.array([0, 1, 0, 1])
    model = jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=8, depth=0, n_classes=2)
    cs = jd.train(jd.ConditionalNetworkScore(model, process, jd.EDMParam()), data, process, labels=labels,
                  key=jax.random.PRNGKey(1), steps=1, batch_size=4, progress=False)  # fmt: skip
    assert cs.parametrisation.sigma_data == pytest.approx(np.sqrt(5.0), rel=1e-12)
    assert cs.conditional(1).parametrisation.sigma_data == pytest.approx(np.sqrt(5.0), rel=1e-12)
    # a given sigma_data is kept (the resolution step of `train`, without the training)
    given = jd.ConditionalNetworkScore(model, process, jd.EDMParam(sigma_data=0.5))
    kept, _ = jd.training._resolve_sigma_data(given, jd.DSMLoss(), data, jax.random.PRNGKey(1))
    assert kept.parametrisation.sigma_data == 0.5


@pytest.mark.slow
def test_learned_cfg_on_a_labelled_mixture():
    """One network, conditional and unconditional branches: guidance toward class 2 of four
    well-separated components puts the samples in that component; scale 0 does not."""
    import optax

    process = jd.VP()
    means = 2.0 * jnp.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]])
    idx = jax.random.randint(jax.random.PRNGKey(0), (4000,), 0, 4)
    data = means[idx] + 0.2 * jax.random.normal(jax.random.PRNGKey(1), (4000, 2))
    cs = jd.ConditionalNetworkScore(
        jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=64, depth=2, n_classes=4), process
    )
    cs = jd.train(
        cs,
        data,
        process,
        key=jax.random.PRNGKey(0),
        steps=1500,
        batch_size=256,
        labels=np.asarray(idx),
        progress=False,
        optimizer=optax.adam(3e-3),
    )
    share = {}
    for w in (0.0, 1.0):
        xs = jd.sample(
            jax.random.PRNGKey(2), jd.guide(cs, 2, w), process, (500, 2), sampler=jd.DDIM(), steps=50
        )
        share[w] = float(
            jnp.mean(jnp.argmin(jnp.linalg.norm(xs[:, None] - means[None], axis=-1), axis=1) == 2)
        )
    assert share[1.0] > 0.95 and share[0.0] < 0.4  # measured: 1.0 and 0.256


@pytest.mark.slow
def test_digits_cfg_guides_a_unet_to_the_asked_class():
    """A small class-conditional U-Net on the scikit-learn digits (400 steps): with guidance a
    logistic regression trained on real digits recognises the asked class (>= 0.9; measured
    0.99 at scale 4 with this setup), without guidance it does not (chance is 0.1)."""
    import optax
    from sklearn.linear_model import LogisticRegression

    with jax.enable_x64(False):
        images, labels = jd.data.digits(return_labels=True)
        labels = np.asarray(labels)
        flat = np.asarray(images).reshape(len(images), -1)
        clf = LogisticRegression(max_iter=3000).fit(flat, labels)
        process = jd.VP()
        key = jax.random.PRNGKey(0)
        model = jd.nn.UNet(1, key=key, base=16, mults=(1, 2), n_classes=10)
        score = jd.train(jd.ConditionalNetworkScore(model, process), images, process,
                         key=jax.random.fold_in(key, 1), steps=400, batch_size=128, labels=labels,
                         label_dropout=0.1, optimizer=optax.adam(2e-3), progress=False)  # fmt: skip
        acc = {}
        for w in (0.0, 4.0):
            hits = []
            for c in range(10):
                k = jax.random.fold_in(jax.random.PRNGKey(7), c)
                x = jd.sample(k, jd.guide(score, c, w), process, (20, 1, 8, 8), sampler=jd.DDIM(), steps=50)
                hits.append(clf.predict(np.clip(np.asarray(x).reshape(20, -1), -1, 1)) == c)
            acc[w] = float(np.mean(hits))
    assert acc[4.0] >= 0.9 and acc[0.0] <= 0.3, acc
