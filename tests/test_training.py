"""Training: a trained MLP against the exact score and law, checkpoints (bit-exact round trip,
interrupted writes, resume), the EMA in closed form, data parallelism on 4 simulated CPU
devices, and the toy data sets."""

import json
import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxdiff as jd

PROCESS = jd.OU(T=5.0)
MIX = jd.GaussianMixture(jnp.array([[-1.5, 0.0], [1.0, 1.0]]), jnp.array([0.3, 0.5]), jnp.array([0.4, 0.6]))
DATA = MIX.sample(jax.random.PRNGKey(0), 512)
OPT = optax.adam(1e-2)  # one object for the file: the compiled training chunk is cached on it


def _tiny_score(seed=0):
    return jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(seed), width=16, depth=1), PROCESS)


def _leaves(tree):
    return jax.tree.leaves(eqx.filter(tree, eqx.is_array))


def _assert_bit_equal(a, b):
    la, lb = _leaves(a), _leaves(b)
    assert len(la) == len(lb) > 0
    for x, y in zip(la, lb):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(np.asarray(x), np.asarray(y))


def _train(score, steps, **kw):
    defaults = dict(key=jax.random.PRNGKey(1), steps=steps, batch_size=32, optimizer=OPT, log_every=10)
    kw = defaults | dict(progress=False) | kw
    return jd.train(score, DATA, PROCESS, **kw)


# ---- acceptance: an MLP trained on a 2-D mixture ----------------------------------------------------


@pytest.mark.slow
def test_trained_mlp_matches_exact_score_and_law():
    # EDM preconditioning, weighting and log-normal noise levels; float32 weights for speed.
    model = jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=64, depth=2, dtype=jnp.float32)
    score = jd.NetworkScore(model, PROCESS, jd.EDMParam(sigma_data=1.0))
    loss = jd.DSMLoss(jd.EDMWeighting(1.0), jd.LogNormalTime(-1.0, 1.4), 1e-3)
    trained, log = jd.train(score, MIX, PROCESS, key=jax.random.PRNGKey(1), steps=1500, batch_size=256,
                            optimizer=optax.adam(3e-3), loss=loss, log_every=250, progress=False,
                            return_log=True)
    assert log.loss.shape == (1500,) and log.loss[-100:].mean() < log.loss[:100].mean()
    exact = jd.ExactScore(PROCESS, MIX)
    # sigma^2-weighted Fisher divergence over t ~ U[1e-3, T] (the untrained net is at about 2.4)
    f = np.asarray(jd.fisher_divergence(trained, exact, PROCESS, MIX, key=jax.random.PRNGKey(2), n=2000,
                                        reduce=False))
    assert f.mean() + 4 * f.std() / np.sqrt(f.size) < 3e-3, f.mean()
    # samples through the probability-flow ODE match the law: sliced W2 below 0.15, where two
    # independent exact samples of this size are 0.05-0.07 apart
    n = 4000
    xs = jd.sample(jax.random.PRNGKey(3), trained, PROCESS, (n, 2), sampler=jd.ProbabilityFlow(), steps=40,
                   grid=jd.LogSNRGrid(), t_end=jnp.array(1e-3))
    sw = jd.metrics.sliced_wasserstein(xs, MIX.sample(jax.random.PRNGKey(4), n), key=jax.random.PRNGKey(5))
    assert float(sw) < 0.15, float(sw)


# ---- checkpoints -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """An uninterrupted 40-step run, and the same run stopped at 20 and resumed from its checkpoint."""
    path = tmp_path_factory.mktemp("ckpt") / "run.eqx"
    full, full_log = _train(_tiny_score(), 40, return_log=True)
    _train(_tiny_score(), 20, checkpoint=path, checkpoint_every=10)
    assert jd.training.read_checkpoint_meta(path)["step"] == 20
    res, res_log = _train(_tiny_score(), 40, checkpoint=path, checkpoint_every=10, return_log=True)
    return full, full_log, res, res_log, path


def test_resume_is_bit_exact(resumed):
    full, full_log, res, res_log, path = resumed
    _assert_bit_equal(full, res)
    np.testing.assert_array_equal(full_log.loss, res_log.loss)
    # one dispatch per step (the default for convolutional nets) computes the same steps as the
    # fused chunks (one lax.scan each, the default here), up to float rounding
    stepwise, stepwise_log = _train(_tiny_score(), 40, fuse_steps=False, return_log=True)
    np.testing.assert_allclose(stepwise_log.loss, full_log.loss, rtol=1e-10)
    for a, b in zip(_leaves(stepwise), _leaves(full)):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    assert jd.training.read_checkpoint_meta(path)["step"] == 40
    # training did something: the loss fell
    assert full_log.loss[-10:].mean() < full_log.loss[:10].mean()


def test_checkpoint_round_trip_is_bit_exact(resumed, tmp_path):
    trained = resumed[0]
    path = jd.save_checkpoint(tmp_path / "score.eqx", trained, meta={"note": "x"})
    back = jd.load_checkpoint(path, _tiny_score(seed=5))  # a different net of the same shape as template
    _assert_bit_equal(trained, back)
    assert jd.training.read_checkpoint_meta(path) == {"note": "x"}
    with pytest.raises(ValueError, match="does not match"):
        jd.load_checkpoint(path, jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=8, depth=1),
                                                 PROCESS))


def test_interrupted_write_leaves_previous_checkpoint(resumed, tmp_path, monkeypatch):
    first, second = _tiny_score(seed=1), resumed[0]
    path = jd.save_checkpoint(tmp_path / "score.eqx", first)
    before = path.read_bytes()

    def interrupted(f, tree, *args, **kwargs):
        f.write(b"\x00" * 100)  # half a file, then the process is interrupted
        raise KeyboardInterrupt

    monkeypatch.setattr(eqx, "tree_serialise_leaves", interrupted)
    with pytest.raises(KeyboardInterrupt):
        jd.save_checkpoint(path, second)
    monkeypatch.undo()
    assert path.read_bytes() == before
    _assert_bit_equal(first, jd.load_checkpoint(path, _tiny_score(seed=2)))
    assert os.listdir(tmp_path) == ["score.eqx"]  # no temporary file left behind


def test_damaged_checkpoints_are_named_truncated_or_corrupted(resumed, tmp_path):
    trained = resumed[0]
    path = jd.save_checkpoint(tmp_path / "score.eqx", trained)
    good = path.read_bytes()
    like = _tiny_score(seed=2)
    flipped = bytearray(good)
    flipped[-40:-24] = bytes(b ^ 0xFF for b in flipped[-40:-24])  # 16 payload bytes
    path.write_bytes(bytes(flipped))
    with pytest.raises(jd.CheckpointError, match=r"score\.eqx.*corrupted"):
        jd.load_checkpoint(path, like)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(jd.CheckpointError, match=r"score\.eqx.*truncated"):
        jd.load_checkpoint(path, like)
    lines = good.split(b"\n", 2)
    path.write_bytes(lines[0] + b"\n{not json\n" + lines[2])
    with pytest.raises(jd.CheckpointError, match=r"score\.eqx.*corrupted.*JSON"):
        jd.training.read_checkpoint_meta(path)
    assert issubclass(jd.CheckpointError, ValueError)


def test_full_disk_is_an_oserror_and_keeps_the_previous_file(resumed, tmp_path, monkeypatch):
    import errno

    path = jd.save_checkpoint(tmp_path / "score.eqx", _tiny_score(seed=1))
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match="No space"):
        jd.save_checkpoint(path, resumed[0])
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["score.eqx"]


def test_stale_temporary_files_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale, live = tmp_path / f".score.eqx.tmp-{dead}", tmp_path / f".score.eqx.tmp-{os.getppid()}"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    jd.save_checkpoint(tmp_path / "score.eqx", {"a": jnp.zeros(2)})
    assert not stale.exists() and live.exists()


def test_resume_checks_the_run(resumed, tmp_path):
    import shutil

    res, path = resumed[2], tmp_path / "run.eqx"
    shutil.copy(resumed[4], path)  # a 40-step run on DATA
    # another data set, batch size or loss: refused, naming what differs, before any step
    with pytest.raises(ValueError, match="another run: data"):
        jd.train(_tiny_score(), DATA[:256], PROCESS, key=jax.random.PRNGKey(1), steps=40, batch_size=32,
                 optimizer=OPT, log_every=10, progress=False, checkpoint=path)
    with pytest.raises(ValueError, match="batch_size"):
        _train(_tiny_score(), 40, checkpoint=path, batch_size=16)
    with pytest.raises(ValueError, match="loss"):
        _train(_tiny_score(), 40, checkpoint=path, loss=jd.DSMLoss())
    # a checkpoint past `steps` is an error; one at `steps` returns its model without training
    with pytest.raises(ValueError, match="step 40, past `steps`=10"):
        _train(_tiny_score(), 10, checkpoint=path)
    _assert_bit_equal(res, _train(_tiny_score(), 40, checkpoint=path))
    # resume="force" takes the file anyway
    forced = jd.train(_tiny_score(), DATA[:256], PROCESS, key=jax.random.PRNGKey(1), steps=40, batch_size=32,
                      optimizer=OPT, log_every=10, progress=False, checkpoint=path, resume="force")
    _assert_bit_equal(res, forced)
    # a plain tree from save_checkpoint is not a training state
    plain = jd.save_checkpoint(tmp_path / "plain.eqx", res)
    with pytest.raises(jd.CheckpointError, match="save_checkpoint"):
        _train(_tiny_score(), 40, checkpoint=plain)


def test_checkpoint_paths_are_checked_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    for bad in (tmp_path, tmp_path / "file" / "run.eqx"):
        with pytest.raises(ValueError, match="checkpoint"):
            _train(_tiny_score(), 10, checkpoint=bad, optimizer=optax.scale(jnp.nan))  # NaN if it ran


# ---- EMA, errors ---------------------------------------------------------------------------------


def test_ema_is_the_bias_corrected_average_of_iterates():
    beta = 0.5
    one = _train(_tiny_score(), 1, ema=0.0, log_every=1)
    two = _train(_tiny_score(), 2, ema=0.0, log_every=1)
    avg = _train(_tiny_score(), 2, ema=beta, log_every=1)
    # m_2 / (1 - beta^2) = ((1 - beta) beta theta_1 + (1 - beta) theta_2) / (1 - beta^2)
    for a, t1, t2 in zip(_leaves(avg), _leaves(one), _leaves(two)):
        np.testing.assert_allclose(a, (beta * t1 + t2) / (1 + beta), rtol=1e-12, atol=1e-15)


def test_train_refuses_bad_input_and_stops_on_nan():
    with pytest.raises(ValueError, match="process"):
        jd.train(_tiny_score(), DATA, jd.VP(), key=jax.random.PRNGKey(0), steps=1, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        _train(_tiny_score(), 1, batch_size=0)
    with pytest.raises(ValueError, match="data"):
        jd.train(_tiny_score(), DATA.at[0, 0].set(jnp.nan), PROCESS, key=jax.random.PRNGKey(0), steps=1,
                 batch_size=4)
    with pytest.raises(FloatingPointError, match="step 2"):
        _train(_tiny_score(), 10, optimizer=optax.scale(jnp.nan))


# ---- data parallelism --------------------------------------------------------------------------------

_WORKER = textwrap.dedent("""
    import json, jax, optax, jax.numpy as jnp
    import jaxdiff as jd
    assert len(jax.devices()) == 4, jax.devices()
    P = jd.OU()
    data = jd.data.two_moons(jax.random.PRNGKey(0), 256)
    score = jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(0), width=16, depth=1), P)
    opt = optax.adam(1e-2)
    out = {}
    for n in (1, 4):
        s, log = jd.train(score, data, P, key=jax.random.PRNGKey(1), steps=30, batch_size=64, optimizer=opt,
                          log_every=10, progress=False, devices=jax.devices()[:n], return_log=True)
        leaf = jax.tree.leaves(s.model)[0]
        out[str(n)] = {"loss": log.loss.tolist(), "devices": len(leaf.devices()),
                       "weights": [float(jnp.sum(x)) for x in jax.tree.leaves(s.model)]}
    try:
        jd.train(score, data, P, key=jax.random.PRNGKey(1), steps=1, batch_size=6, progress=False)
    except ValueError as e:
        out["error"] = str(e)
    print("RESULT" + json.dumps(out))
""")


@pytest.mark.slow
def test_four_devices_give_the_same_loss_curve_as_one():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_ENABLE_X64="1",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _WORKER], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    one, four = out["1"], out["4"]
    assert one["devices"] == 1 and four["devices"] == 4
    np.testing.assert_allclose(four["loss"], one["loss"], rtol=1e-10)
    np.testing.assert_allclose(four["weights"], one["weights"], rtol=1e-8, atol=1e-10)
    assert "divisible" in out["error"]


# ---- toy data ------------------------------------------------------------------------------------


def test_toy_data_geometry():
    key = jax.random.PRNGKey(3)
    c = jd.data.circle(key, 500, radius=2.0)
    np.testing.assert_allclose(jnp.linalg.norm(c, axis=1), 2.0, rtol=1e-12)
    r = jnp.linalg.norm(jd.data.rings(key, 900, radii=(0.5, 1.5), noise=0.0), axis=1)
    assert bool(jnp.all(jnp.minimum(jnp.abs(r - 0.5), jnp.abs(r - 1.5)) < 1e-12))
    frac = float(jnp.mean(jnp.abs(r - 0.5) < 1e-12))
    assert abs(frac - 0.5) < 4 * np.sqrt(0.25 / 900)
    m = jd.data.two_moons(key, 1000, noise=0.0) + jnp.array([0.5, 0.25])
    upper = jnp.abs(jnp.linalg.norm(m, axis=1) - 1) < 1e-9  # on the unit circle, y >= 0
    # the lower moon: centre (1, 0.5), y <= 0.5
    lower = jnp.abs(jnp.linalg.norm(m - jnp.array([1.0, 0.5]), axis=1) - 1) < 1e-9
    assert bool(jnp.all(upper | lower))
    assert bool(jnp.all(m[upper, 1] >= -1e-12)) and bool(jnp.all(m[lower & ~upper, 1] <= 0.5 + 1e-12))
    # point i depends on fold_in(key, i) only
    np.testing.assert_array_equal(jd.data.two_moons(key, 10), jd.data.two_moons(key, 1000)[:10])
    with pytest.raises(ValueError, match="n"):
        jd.data.rings(key, 0)


def test_fuse_steps_default_follows_the_network():
    assert not jd.training._has_conv(_tiny_score())
    conv_model = (eqx.nn.Conv2d(1, 1, 3, key=jax.random.PRNGKey(0)), _tiny_score().model)
    assert jd.training._has_conv(jd.NetworkScore(lambda c, x: x, PROCESS)) is False
    assert jd.training._has_conv(conv_model)


def test_digits():
    x, y = jd.data.digits(return_labels=True)
    assert x.shape == (1797, 1, 8, 8) and y.shape == (1797,)
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert set(np.unique(np.asarray(y)).tolist()) == set(range(10))
    np.testing.assert_array_equal(jd.data.digits(flatten=True), x.reshape(1797, 64))


@pytest.mark.parametrize("fuse", [True, False])
def test_donated_state_never_touches_the_callers_arrays(fuse):
    """`train` donates its state buffers step by step; the caller's score must stay intact and a
    second run from it must repeat the first bit for bit."""
    score = _tiny_score(3)
    before = [np.array(x) for x in _leaves(score)]
    kw = dict(key=jax.random.PRNGKey(2), steps=12, batch_size=32, optimizer=OPT, log_every=5, progress=False,
              fuse_steps=fuse)
    first = jd.train(score, DATA, PROCESS, **kw)
    for x, b in zip(_leaves(score), before):
        assert not x.is_deleted()
        assert np.array_equal(np.asarray(x), b)
    _assert_bit_equal(first, jd.train(score, DATA, PROCESS, **kw))
    # and training moved the weights (the comparison above is not vacuous)
    assert any(not np.array_equal(np.asarray(x), b) for x, b in zip(_leaves(first), before))


# ---- defaults ----------------------------------------------------------------------------------------


def _ring_run(steps, batch_size, model_kw, n, **train_kw):
    """The ring of 8 N(m_k, 0.3^2 I), |m_k| = 4, data not standardised, trained with defaults."""
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
    from benchmarks.bench_defaults import mode_stats, relative_score_error, ring_law

    law, process = ring_law(), jd.VP()
    data = law.sample(jax.random.PRNGKey(0), 2048 if steps < 4000 else 20000)
    score = jd.NetworkScore(jd.nn.MLP(2, key=jax.random.PRNGKey(1), **model_kw), process)
    trained = jd.train(score, data, process, key=jax.random.PRNGKey(2), steps=steps, batch_size=batch_size,
                       progress=False, **train_kw)
    exact = jd.ExactScore(process, law)
    err = relative_score_error(trained, exact, process, data[:1000], jax.random.PRNGKey(4), 1e-3)
    return trained, law, process, err, mode_stats


def test_defaults_learn_unstandardised_data():
    """A small proxy of the full-size check below. Measured at this size (one seed): the former
    defaults (eps parametrisation, sigma^2 weighting, uniform times, Adam 1e-3) give a relative
    score error of 13 at t = 1e-3 and probability-flow samples spread over RMS 17; the defaults
    give 4.5 and 0.72."""
    trained, law, process, err, mode_stats = _ring_run(400, 128, dict(width=64, depth=2), 500)
    # sigma_data, recorded in the score: the data's RMS per coordinate, sqrt((4^2 + 2 * 0.3^2) / 2)
    assert abs(trained.parametrisation.sigma_data - 2.84) < 0.1
    assert err < 8.0, err
    x = jd.sample(jax.random.PRNGKey(3), trained, process, (500, 2), sampler=jd.ProbabilityFlow(), steps=40,
                  t_end=1e-3)
    rms, _ = mode_stats(x, law.means)
    assert rms < 1.5, rms


@pytest.mark.slow
def test_defaults_full_size_ring():
    """Every default, 4000 steps of batch 512: both samplers within 0.30 +- 0.03 of the modes'
    RMS, every mode's share within 0.02 of 1/8 (4000 samples; the share's standard error is 0.005)."""
    trained, law, process, err, mode_stats = _ring_run(4000, 512, {}, 4000)
    for sampler in (jd.ProbabilityFlow(), jd.ReverseSDE()):
        x = jd.sample(jax.random.PRNGKey(3), trained, process, (4000, 2), sampler=sampler, t_end=1e-3)
        rms, dev = mode_stats(x, law.means)
        assert abs(rms - 0.3) <= 0.03 and dev <= 0.02, (type(sampler).__name__, rms, dev)
