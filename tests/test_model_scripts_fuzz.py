"""Malformed model scripts, generated from a template: loading one fails with a ModelError
whose message names the file (and the site, where one is at fault), never another exception;
the valid variants load with the shapes the script declares. Encoders asked for a method that
does not fit the latent (enumerate on a continuous latent, laplace or nuts on a discrete one)
fail the same way.

Each example writes one small script and loads it (a few milliseconds: one Pyro trace).
"""

import dataclasses
import itertools
import keyword
import re

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from latentae import JointModel, ModelError

PROPERTY = settings(max_examples=150, deadline=None)

# Site names are drawn at random, so that a message naming "the site" is checked for the name
# the script used rather than for a fixed default.
names = st.from_regex(r"[a-z][a-z0-9_]{1,7}", fullmatch=True).filter(
    lambda s: not keyword.iskeyword(s) and s not in {"data", "dist", "pyro", "torch", "n", "model"}
)

# Latent distributions: (source, event shape, discrete?). K is the script's constant.
LATENTS = {
    "normal": ("dist.Normal(torch.zeros(K), 1.0).to_event(1)", lambda k: (k,), False),
    "scalar": ("dist.Normal(0.0, 1.0)", lambda k: (), False),
    "beta": ("dist.Beta(torch.ones(K), 2.0).to_event(1)", lambda k: (k,), False),
    "matrix": ("dist.Normal(torch.zeros(2, K), 1.0).to_event(2)", lambda k: (2, k), False),
    "categorical": ("dist.Categorical(logits=torch.zeros(K + 1))", lambda k: (), True),
    "bernoulli": ("dist.Bernoulli(0.3 * torch.ones(K)).to_event(1)", lambda k: (k,), True),
    "poisson": ("dist.Poisson(torch.ones(K)).to_event(1)", lambda k: (k,), True),
}
# The latent distributions expanded to n rows: the shapes a plate would give them.
EXPANDED = {
    "normal": "dist.Normal(torch.zeros(K), 1.0).expand([n, K]).to_event(1)",
    "scalar": "dist.Normal(0.0, 1.0).expand([n])",
    "beta": "dist.Beta(torch.ones(K), 2.0).expand([n, K]).to_event(1)",
    "matrix": "dist.Normal(torch.zeros(2, K), 1.0).expand([n, 2, K]).to_event(2)",
    "categorical": "dist.Categorical(logits=torch.zeros(K + 1)).expand([n])",
    "bernoulli": "dist.Bernoulli(0.3 * torch.ones(K)).expand([n, K]).to_event(1)",
    "poisson": "dist.Poisson(torch.ones(K)).expand([n, K]).to_event(1)",
}
OBSERVED = {
    "normal": "dist.Normal(loc * torch.ones(D), 0.5).to_event(1)",
    "bernoulli": "dist.Bernoulli(logits=loc * torch.ones(D)).to_event(1)",
}

EXCEPTIONS = [
    "ValueError",
    "RuntimeError",
    "ImportError",
    "ZeroDivisionError",
    "KeyError",
    "AttributeError",
    "NameError",
    "TypeError",
    "OSError",
    "AssertionError",
    "NotImplementedError",
    "IndexError",
    "ArithmeticError",
    "LookupError",
    "UnicodeError",
    "MemoryError",
    "RecursionError",
    "StopIteration",
    "Exception",
]


@dataclasses.dataclass
class Script:
    """A model script in pieces; ``source()`` assembles it."""

    h: str
    x: str
    latent: str
    observed: str
    k: int
    d: int
    prelude: list[str] = dataclasses.field(default_factory=list)
    header: str = "def model(n):"
    plate: str = 'with pyro.plate("data", n):'
    before_plate: list[str] = dataclasses.field(default_factory=list)
    h_line: str = ""
    middle: list[str] = dataclasses.field(default_factory=list)
    x_line: str = ""
    after_plate: list[str] = dataclasses.field(default_factory=list)
    postlude: list[str] = dataclasses.field(default_factory=list)

    def source(self) -> str:
        lines = [
            "import pyro",
            "import pyro.distributions as dist",
            "import torch",
            "",
            f"K = {self.k}",
            f"D = {self.d}",
            *self.prelude,
            "",
            "",
            self.header,
            *(f"    {s}" for s in self.before_plate),
            f"    {self.plate}",
            *(f"        {s}" for s in [self.h_line, *self.middle, self.x_line] if s),
            *(f"    {s}" for s in self.after_plate),
            *self.postlude,
        ]
        return "\n".join(lines) + "\n"


# The observed site's mean: one number per row from any latent value, however shaped.
LOC = "loc = h.reshape(h.shape[0], -1).to(torch.get_default_dtype()).sum(-1, keepdim=True)"


@dataclasses.dataclass
class Case:
    """A script and what loading it must do: load (``error is None``) or raise ModelError
    matching ``error`` and naming ``site`` (if not None)."""

    script: Script
    latent_kind: str
    error: str | None = None
    site: str | None = None


@st.composite
def cases(draw):
    h, x, extra = draw(st.lists(names, min_size=3, max_size=3, unique=True))
    if draw(st.booleans()):
        h, x = "h", "x"  # the default names, which need no LATENT or OBSERVED
    latent_kind = draw(st.sampled_from(sorted(LATENTS)))
    observed_kind = draw(st.sampled_from(sorted(OBSERVED)))
    k, d = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    s = Script(h=h, x=x, latent=h, observed=x, k=k, d=d)
    if (h, x) != ("h", "x") or draw(st.booleans()):
        s.prelude = [f"LATENT = {h!r}", f"OBSERVED = {x!r}"]
    s.h_line = f"h = pyro.sample({h!r}, {LATENTS[latent_kind][0]})"
    s.middle = [LOC]
    s.x_line = f"pyro.sample({x!r}, {OBSERVED[observed_kind]})"
    case = Case(s, latent_kind)
    # Valid scripts weigh three mutations, so that each run loads some (P(none) < 1e-8).
    mutation = draw(st.sampled_from([valid, valid, *MUTATIONS]))
    mutation(draw, case, extra)
    return case


# ---------------------------------------------------------------------- mutations
# Each edits the script and records what loading it must do.


def valid(draw, case, extra):
    if draw(st.booleans()):  # a deterministic site is allowed besides the two sample sites
        case.script.middle.append(f"pyro.deterministic({extra!r}, loc)")


def missing_latent_name(draw, case, extra):
    s = case.script
    if s.h == "h" or draw(st.booleans()):
        s.prelude = [f"LATENT = {extra!r}", f"OBSERVED = {s.x!r}"]
        wanted = extra
    else:  # LATENT left at its default, "h", which the script does not use
        s.prelude = [f"OBSERVED = {s.x!r}"]
        wanted = "h"
    case.error, case.site = rf"no sample site named '{wanted}' for the latent", wanted


def missing_observed_name(draw, case, extra):
    s = case.script
    s.prelude = [f"LATENT = {s.h!r}", f"OBSERVED = {extra!r}"]
    case.error, case.site = rf"no sample site named '{extra}' for the observed", extra


def same_names(draw, case, extra):
    s = case.script
    s.prelude = [f"LATENT = {s.x!r}", f"OBSERVED = {s.x!r}"]
    case.error, case.site = rf"both named '{s.x}'", s.x


def name_not_a_string(draw, case, extra):
    s = case.script
    value = draw(st.sampled_from(["3", "None", "['h']", "b'h'"]))
    s.prelude = [f"LATENT = {value}", f"OBSERVED = {s.x!r}"]
    case.error = "site names must be strings"


def extra_sample_site(draw, case, extra):
    s = case.script
    line = f"pyro.sample({extra!r}, dist.Normal(0.0, 1.0))"
    s.middle.insert(draw(st.integers(0, 1)), line)
    case.error, case.site = rf"sample site '{extra}' is neither the latent", extra


def observed_inside(draw, case, extra):
    s = case.script
    if draw(st.booleans()):
        s.x_line = s.x_line[:-1] + ", obs=torch.zeros(n, D))"
        site = s.x
    else:
        shape = LATENTS[case.latent_kind][1](s.k)
        s.h_line = s.h_line[:-1] + f", obs=torch.zeros((n, *{shape!r})))"
        site = s.h
    case.error, case.site = rf"site '{site}' is observed inside the script", site


def outside_plate(draw, case, extra):
    s = case.script
    which = draw(st.sampled_from(["latent", "observed"]))
    if which == "latent":
        s.before_plate = [f"h = pyro.sample({s.h!r}, {EXPANDED[case.latent_kind]})"]
        s.h_line = ""
        site = s.h
    else:
        s.after_plate = [f"pyro.sample({s.x!r}, dist.Normal(loc * torch.ones(D), 0.5).to_event(1))"]
        s.x_line = ""
        site = s.x
    case.error, case.site = rf"site '{site}' is outside pyro\.plate\('data', n\)", site


def plate_renamed(draw, case, extra):
    s = case.script
    s.plate = f"with pyro.plate({extra!r}, n):"
    case.error, case.site = rf"site '{s.h}' is outside pyro\.plate\('data', n\)", s.h


def plate_of_wrong_size(draw, case, extra):
    s = case.script
    s.plate = draw(
        st.sampled_from(['with pyro.plate("data", n + 1):', 'with pyro.plate("data", 7):'])
    )
    case.error, case.site = rf"plate 'data' around site '{s.h}' has size \d+ but model\(3\)", s.h


def missing_plate(draw, case, extra):
    s = case.script
    s.plate = "if True:"
    s.h_line = f"h = pyro.sample({s.h!r}, {EXPANDED[case.latent_kind]})"
    case.error, case.site = rf"site '{s.h}' is outside pyro\.plate", s.h


def extra_plate(draw, case, extra):
    s = case.script
    size = draw(st.integers(2, 4))
    s.middle.append(f"with pyro.plate({extra!r}, {size}):")
    s.x_line = "    " + s.x_line
    case.error, case.site = rf"site '{s.x}' has batch shape \({size}, 3\)", s.x


def missing_to_event(draw, case, extra):
    s = case.script
    if case.latent_kind not in ("normal", "beta", "bernoulli", "poisson"):
        case.latent_kind = "normal"
    # Not 3, the probe size of JointModel's check, where a per-example dimension of size 3
    # is indistinguishable from the plate; not 1, which broadcasts against the plate.
    s.k = draw(st.sampled_from([2, 4]))
    s.h_line = (
        f"h = pyro.sample({s.h!r}, {LATENTS[case.latent_kind][0].replace('.to_event(1)', '')})"
    )
    case.error, case.site = rf"Shape mismatch inside plate\('data'\) at site {s.h}\b", s.h


def wrong_shape(draw, case, extra):
    s = case.script
    s.h_line = (
        f"h = pyro.sample({s.h!r}, dist.Normal(torch.zeros(K), 1.0).expand([n + 1, K]).to_event(1))"
    )
    case.error, case.site = rf"Shape mismatch inside plate\('data'\) at site {s.h}\b", s.h


def integer_observed(draw, case, extra):
    s = case.script
    s.x_line = f"pyro.sample({s.x!r}, dist.Categorical(logits=loc * torch.ones(D)))"
    case.error, case.site = rf"observed site '{s.x}' has integer values", s.x


def param_site(draw, case, extra):
    s = case.script
    s.middle.insert(0, f"w = pyro.param({extra!r}, torch.ones(()))")
    s.middle.append("loc = loc * w")
    case.error, case.site = rf"site '{extra}' is a pyro\.param", extra


def syntax_error(draw, case, extra):
    s = case.script
    s.header = draw(st.sampled_from(["def model(n)", "def model(n):)", "def model(n: ="]))
    case.error = r"failed to execute: (SyntaxError|IndentationError)"


def raises_at_import(draw, case, extra):
    s = case.script
    name = draw(st.sampled_from(EXCEPTIONS))
    s.prelude.append(f"raise {name}('broken at import')")
    case.error = rf"failed to execute: {name}"


def missing_module(draw, case, extra):
    s = case.script
    s.prelude.append(f"import {extra}_not_a_module")
    case.error = r"failed to execute: ModuleNotFoundError"


def raises_in_model(draw, case, extra):
    s = case.script
    name = draw(st.sampled_from(EXCEPTIONS))
    s.middle.insert(draw(st.integers(0, 1)), f"raise {name}('broken in model')")
    case.error = rf"model\(3\) raised {name}"


def no_model_function(draw, case, extra):
    s = case.script
    choice = draw(st.sampled_from(["renamed", "not callable", "class attribute"]))
    if choice == "renamed":
        s.header = f"def {extra}(n):"
    elif choice == "not callable":
        s.postlude = ["", "model = 3"]
    else:
        s.header = "class Holder:\n    @staticmethod\n    def model(n):"
        # the body one level deeper, under the class
        s.plate = "    " + s.plate
        s.h_line, s.x_line = "    " + s.h_line, "    " + s.x_line
        s.middle = ["    " + m for m in s.middle]
    case.error = r"defines no function `model`"


def wrong_signature(draw, case, extra):
    s = case.script
    s.header = draw(st.sampled_from(["def model():", "def model(n, m):", "def model(*, n):"]))
    s.plate = 'with pyro.plate("data", 3):'
    case.error = r"model\(3\) raised TypeError"


def no_sites(draw, case, extra):
    s = case.script
    s.h_line, s.x_line, s.middle = "", "", ["pass"]
    case.error, case.site = rf"no sample site named '{s.h}' for the latent", s.h


def data_not_callable(draw, case, extra):
    s = case.script
    s.postlude = ["", "data = torch.zeros(4, D)"]
    case.error = r"`data` must be a function"


MUTATIONS = [
    valid,
    missing_latent_name,
    missing_observed_name,
    same_names,
    name_not_a_string,
    extra_sample_site,
    observed_inside,
    outside_plate,
    plate_renamed,
    plate_of_wrong_size,
    missing_plate,
    extra_plate,
    missing_to_event,
    wrong_shape,
    integer_observed,
    param_site,
    syntax_error,
    raises_at_import,
    missing_module,
    raises_in_model,
    no_model_function,
    wrong_signature,
    no_sites,
    data_not_callable,
]


# ---------------------------------------------------------------------- the properties

# Encoder methods that cannot apply to a latent kind, and what the refusal says.
UNFIT_METHODS = {
    "normal": [("enumerate", "needs a latent with finite support")],
    "scalar": [("enumerate", "needs a latent with finite support")],
    "beta": [("enumerate", "needs a latent with finite support")],
    "matrix": [
        ("enumerate", "needs a latent with finite support"),
        ("laplace", r"needs a latent of shape \(n,\) or \(n, k\)"),
    ],
    "categorical": [("laplace", "needs a continuous latent"), ("nuts", "needs a continuous")],
    "bernoulli": [("laplace", "needs a continuous latent"), ("nuts", "needs a continuous")],
    "poisson": [
        ("enumerate", "cannot list the support of"),
        ("laplace", "needs a continuous latent"),
    ],
}

_counter = itertools.count()


def _write(folder, case):
    path = folder / f"script_{next(_counter)}.py"
    path.write_text(case.script.source(), encoding="utf-8")
    return path


def _assert_names(message, path, site):
    assert repr(str(path)) in message, message
    if site is not None:
        assert re.search(rf"(?<![\w]){re.escape(site)}(?![\w])", message), message


def test_generated_scripts(tmp_path):
    seen = set()

    @PROPERTY
    @given(case=cases())
    def check(case):
        path = _write(tmp_path, case)
        source = case.script.source()
        if case.error is None:
            jm = JointModel.from_file(path)
            assert (jm.latent, jm.observed) == (case.script.h, case.script.x), source
            shape = LATENTS[case.latent_kind][1](case.script.k)
            assert tuple(jm.latent_shape) == shape, source
            assert tuple(jm.observed_shape) == (case.script.d,), source
            assert jm.latent_is_discrete == LATENTS[case.latent_kind][2], source
            seen.add("valid")
            return
        with pytest.raises(ModelError) as info:
            JointModel.from_file(path)
        message = str(info.value)
        assert re.search(case.error, message), f"{message}\n--- script:\n{source}"
        _assert_names(message, path, case.site)
        seen.add(case.error)

    check()
    assert "valid" in seen  # the generator reaches the valid scripts too


def test_unfit_encoder_methods(tmp_path):
    @PROPERTY
    @given(
        kind=st.sampled_from(sorted(LATENTS)),
        h=names,
        k=st.integers(1, 4),
        pick=st.integers(0, 1),
    )
    def check(kind, h, k, pick):
        s = Script(h=h, x="x" if h != "x" else "obs", latent=h, observed="x", k=k, d=2)
        s.prelude = [f"LATENT = {h!r}", f"OBSERVED = {s.x!r}"]
        s.h_line = f"h = pyro.sample({h!r}, {LATENTS[kind][0]})"
        s.middle = [LOC]
        s.x_line = f"pyro.sample({s.x!r}, {OBSERVED['normal']})"
        path = _write(tmp_path, Case(s, kind))
        jm = JointModel.from_file(path)
        method, message = UNFIT_METHODS[kind][pick % len(UNFIT_METHODS[kind])]
        with pytest.raises(ModelError, match=message) as info:
            jm.encoder(method)
        _assert_names(str(info.value), path, h)

    check()


def test_enumerate_refuses_a_huge_support(tmp_path):
    s = Script(h="h", x="x", latent="h", observed="x", k=30, d=2)
    s.h_line = f"h = pyro.sample('h', {LATENTS['bernoulli'][0]})"
    s.middle = [LOC]
    s.x_line = f"pyro.sample('x', {OBSERVED['normal']})"
    path = _write(tmp_path, Case(s, "bernoulli"))
    jm = JointModel.from_file(path)
    with pytest.raises(ModelError, match=r"'h' has 1073741824 joint values, more than"):
        jm.encoder("enumerate")


def test_unknown_method_is_a_value_error(tmp_path):
    s = Script(h="h", x="x", latent="h", observed="x", k=2, d=2)
    s.h_line = f"h = pyro.sample('h', {LATENTS['normal'][0]})"
    s.middle = [LOC]
    s.x_line = f"pyro.sample('x', {OBSERVED['normal']})"
    jm = JointModel.from_file(_write(tmp_path, Case(s, "normal")))
    with pytest.raises(
        ValueError, match=r"unknown encoder method 'exact'; choose one of enumerate"
    ):
        jm.encoder("exact")


def test_the_template_itself_loads(tmp_path):
    """The unmutated template is a valid script for every latent and observed kind, so each
    mutation is what breaks a mutated one."""
    for latent, observed in itertools.product(LATENTS, OBSERVED):
        s = Script(h="h", x="x", latent="h", observed="x", k=2, d=3)
        s.h_line = f"h = pyro.sample('h', {LATENTS[latent][0]})"
        s.middle = [LOC]
        s.x_line = f"pyro.sample('x', {OBSERVED[observed]})"
        jm = JointModel.from_file(_write(tmp_path, Case(s, latent)))
        assert tuple(jm.latent_shape) == LATENTS[latent][1](2)
        assert jm.dtype == torch.float64
