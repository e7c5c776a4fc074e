//! Where a module's parameters come from, in the spirit of candle's `VarBuilder`: each module
//! has one constructor that asks a [`Params`] for its tensors by key, shape (PyTorch
//! orientation) and initialiser; the source decides whether they are drawn (the official
//! `_init_weights`, seeded) or taken from a checkpoint (shape-checked, every key used once).
//! So the official layout of a model is written once, in its constructors, whichever way it
//! is built, and a new backbone costs one file.
//!
//! The way back, [`module_state_dict`], walks the Burn module tree itself (field names are the
//! official names), so a saved model has exactly the keys its constructors asked for.

use std::cell::RefCell;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::{Device, Tensor};

use crate::rng::SeededRng;
use crate::weights::{RawTensor, StateDict, transpose};
use crate::{Error, Result};

/// The dotted name of the parameter a module visitor or mapper is at: the path of field names
/// and indices, without the variants of module enums (a network choosing between backbones
/// must not add a level to the official keys or to the optimiser's state names).
#[derive(Debug, Default)]
pub struct ModulePath {
    names: Vec<(String, String)>,
    kept: Vec<bool>,
}

impl ModulePath {
    /// Burn's `enter_module(name, container_type)`.
    pub fn enter(&mut self, name: &str, container_type: &str) {
        let keep = !container_type.starts_with("Enum:");
        if keep {
            self.names
                .push((name.to_string(), container_type.to_string()));
        }
        self.kept.push(keep);
    }

    /// Burn's `exit_module`.
    pub fn exit(&mut self) {
        if self.kept.pop() == Some(true) {
            self.names.pop();
        }
    }

    /// `backbone.layer1.0.conv1.weight`.
    pub fn key(&self) -> String {
        let parts: Vec<&str> = self.names.iter().map(|(n, _)| n.as_str()).collect();
        parts.join(".")
    }

    /// (field name, type of the struct holding it) from the root to the parameter.
    pub fn levels(&self) -> &[(String, String)] {
        &self.names
    }
}

/// How a parameter is drawn when it is not loaded.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// N(0, std²) (the official `trunc_normal_(std=.02)`: the truncation at ±2 is 100 σ away).
    Normal(f64),
    /// U(-bound, bound) (PyTorch's default Linear / Conv init: bound = 1/sqrt(fan_in)).
    Uniform(f64),
    Zeros,
    Ones,
}

enum Source<'a> {
    Init(&'a mut SeededRng),
    Load(StateDict),
}

/// The source behind a tree of [`Params`]: a seeded initialiser or a state dict.
pub struct ParamSource<'a>(RefCell<Source<'a>>);

impl<'a> ParamSource<'a> {
    /// Draws every parameter from `rng`, in the order the constructors ask for them.
    pub fn init(rng: &'a mut SeededRng) -> Self {
        Self(RefCell::new(Source::Init(rng)))
    }

    /// Takes every parameter from `sd` (official keys and orientation).
    pub fn load(sd: StateDict) -> Self {
        Self(RefCell::new(Source::Load(sd)))
    }

    /// The builder for top-level keys.
    pub fn root(&self) -> Params<'_, 'a> {
        Params {
            source: self,
            prefix: String::new(),
        }
    }

    /// Whether parameters are loaded (rather than drawn).
    pub fn is_load(&self) -> bool {
        matches!(*self.0.borrow(), Source::Load(_))
    }

    /// Ends the build: a loaded state dict must have had every tensor used.
    pub fn finish(self) -> Result<()> {
        match self.0.into_inner() {
            Source::Init(_) => Ok(()),
            Source::Load(sd) => sd.finish(),
        }
    }

    /// What is left of a loaded state dict (for a caller that splits one file over several
    /// models); `None` when drawing.
    pub fn into_rest(self) -> Option<StateDict> {
        match self.0.into_inner() {
            Source::Init(_) => None,
            Source::Load(sd) => Some(sd),
        }
    }
}

/// A view of a [`ParamSource`] under a key prefix (`blocks.3.attn.`).
#[derive(Clone)]
pub struct Params<'s, 'a> {
    source: &'s ParamSource<'a>,
    prefix: String,
}

impl<'s, 'a> Params<'s, 'a> {
    /// The builder for keys under `name.`.
    pub fn pp(&self, name: impl std::fmt::Display) -> Self {
        Self {
            source: self.source,
            prefix: format!("{}{name}.", self.prefix),
        }
    }

    /// The full key of `name`.
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// The tensor `name` with PyTorch shape `shape`: drawn with `init`, or loaded (and then
    /// required to have that shape).
    pub fn get(&self, name: &str, shape: &[usize], init: Init) -> Result<RawTensor> {
        let key = self.key(name);
        let n: usize = shape.iter().product();
        match &mut *self.source.0.borrow_mut() {
            Source::Load(sd) => sd.take(&key, shape),
            Source::Init(rng) => {
                let data = match init {
                    Init::Normal(std) => crate::rng::normal(&mut **rng, n, 0.0, std),
                    Init::Uniform(b) => crate::rng::uniform(&mut **rng, n, -b, b),
                    Init::Zeros => vec![0.0; n],
                    Init::Ones => vec![1.0; n],
                };
                RawTensor::new(shape.to_vec(), data)
            }
        }
    }

    /// Drops an optional tensor that nothing here uses (e.g. BatchNorm's int64 step counter).
    pub fn ignore(&self, name: &str) {
        if let Source::Load(sd) = &mut *self.source.0.borrow_mut() {
            sd.remove(&self.key(name));
        }
    }
}

/// A `Linear` layer's tensors in PyTorch orientation: weight `[out, in]`, bias `[out]`.
#[derive(Clone, Debug)]
pub struct LinearParams {
    pub weight: RawTensor,
    pub bias: RawTensor,
}

impl LinearParams {
    /// `weight` drawn with `init`, a zero `bias` (the official `_init_weights` for Linear).
    pub fn new(i: usize, o: usize, init: Init, vb: &Params) -> Result<Self> {
        Ok(Self {
            weight: vb.get("weight", &[o, i], init)?,
            bias: vb.get("bias", &[o], Init::Zeros)?,
        })
    }

    /// PyTorch's default `nn.Linear` init: weight and bias U(±1/sqrt(in)).
    pub fn pytorch_default(i: usize, o: usize, vb: &Params) -> Result<Self> {
        let bound = Init::Uniform(1.0 / (i as f64).sqrt());
        Ok(Self {
            weight: vb.get("weight", &[o, i], bound)?,
            bias: vb.get("bias", &[o], bound)?,
        })
    }

    /// `(in, out)`.
    pub fn dims(&self) -> (usize, usize) {
        (self.weight.shape[1], self.weight.shape[0])
    }

    /// Burn's `Linear` (weight `[in, out]`).
    pub fn into_burn(self, device: &Device) -> Linear {
        let (i, o) = self.dims();
        let w = RawTensor {
            shape: vec![i, o],
            data: transpose(&self.weight.data, o, i),
        };
        Linear {
            weight: w.into_param(device),
            bias: Some(self.bias.into_param(device)),
        }
    }

    /// Host copies for matrix products: weight `[in, out]` row-major, bias.
    pub fn into_host(self) -> (Vec<f32>, Vec<f32>) {
        let (i, o) = self.dims();
        (transpose(&self.weight.data, o, i), self.bias.data)
    }
}

/// A `LayerNorm`'s tensors (weight 1, bias 0 when drawn).
#[derive(Clone, Debug)]
pub struct NormParams {
    pub weight: RawTensor,
    pub bias: RawTensor,
}

impl NormParams {
    pub fn new(d: usize, vb: &Params) -> Result<Self> {
        Ok(Self {
            weight: vb.get("weight", &[d], Init::Ones)?,
            bias: vb.get("bias", &[d], Init::Zeros)?,
        })
    }

    pub fn into_burn(self, eps: f64, device: &Device) -> LayerNorm {
        let mut ln = LayerNormConfig::new(self.weight.data.len())
            .with_epsilon(eps)
            .init(device);
        ln.gamma = self.weight.into_param(device);
        ln.beta = Some(self.bias.into_param(device));
        ln
    }

    pub fn into_host(self) -> (Vec<f32>, Vec<f32>) {
        (self.weight.data, self.bias.data)
    }
}

/// Every parameter (and running statistic) of a Burn module under its official key and in
/// PyTorch orientation: the path of field names, with Burn's `Linear` weights transposed back
/// to `[out, in]` and `LayerNorm`'s `gamma`/`beta` named `weight`/`bias`.
pub fn module_state_dict<M: Module>(module: &M) -> Result<StateDict> {
    let mut v = StateDictVisitor {
        path: ModulePath::default(),
        sd: StateDict::new(),
        err: None,
    };
    module.visit(&mut v);
    match v.err {
        Some(e) => Err(e),
        None => Ok(v.sd),
    }
}

struct StateDictVisitor {
    path: ModulePath,
    sd: StateDict,
    err: Option<Error>,
}

impl ModuleVisitor for StateDictVisitor {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if self.err.is_some() {
            return;
        }
        let levels = self.path.levels();
        let Some((leaf, holder)) = levels.last() else {
            return;
        };
        let parents = &levels[..levels.len() - 1];
        let mut key: Vec<&str> = parents.iter().map(|(n, _)| n.as_str()).collect();
        let leaf = match (holder.as_str(), leaf.as_str()) {
            ("Struct:LayerNorm", "gamma") => "weight",
            ("Struct:LayerNorm", "beta") => "bias",
            (_, l) => l,
        };
        key.push(leaf);
        let key = key.join(".");
        match RawTensor::from_tensor(param.val()) {
            Ok(mut t) => {
                if holder == "Struct:Linear" && leaf == "weight" && t.shape.len() == 2 {
                    let (i, o) = (t.shape[0], t.shape[1]);
                    t = RawTensor {
                        shape: vec![o, i],
                        data: transpose(&t.data, i, o),
                    };
                }
                self.sd.insert(key, t);
            }
            Err(e) => self.err = Some(e),
        }
    }
}
