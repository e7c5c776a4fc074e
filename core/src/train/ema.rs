//! The teacher's exponential moving average of the student:
//! `teacher = m * teacher + (1 - m) * student`, parameter by parameter (matched by path).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::DinoNet;
use crate::model::params::ModulePath;

/// Flattened (non-autodiff) values of every float parameter, by module path.
pub(crate) fn collect_params<M: Module>(module: &M) -> HashMap<String, Tensor<1>> {
    struct Collect {
        path: ModulePath,
        out: HashMap<String, Tensor<1>>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let t = param.val().inner();
            let n = t.shape().num_elements();
            self.out.insert(self.path.key(), t.reshape([n]));
        }
    }
    let mut c = Collect {
        path: ModulePath::default(),
        out: HashMap::new(),
    };
    module.visit(&mut c);
    c.out
}

/// Applies the EMA with momentum `m` to `teacher` from `student`.
pub fn ema_update(teacher: DinoNet, student: &DinoNet, m: f64) -> DinoNet {
    struct Ema {
        path: ModulePath,
        student: HashMap<String, Tensor<1>>,
        m: f64,
    }
    impl ModuleMapper for Ema {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.path.enter(name, container_type);
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.path.exit();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let key = self.path.key();
            let (id, t, mapper) = param.consume();
            // BatchNorm buffers are not parameters: the official EMA leaves the teacher's own
            let buffer = key.ends_with("running_mean") || key.ends_with("running_var");
            let Some(s) = self.student.remove(&key).filter(|_| !buffer) else {
                return Param::from_mapped_value(id, t, mapper);
            };
            let shape = t.shape();
            let t = t.reshape([shape.num_elements()]);
            #[cfg(feature = "flex")]
            if super::fused_updates::ema_applies(&t, &s) {
                let updated = super::fused_updates::ema_step(t, &s, self.m);
                return Param::from_mapped_value(id, updated.reshape(shape), mapper);
            }
            let updated = t * self.m + s * (1.0 - self.m);
            Param::from_mapped_value(id, updated.reshape(shape), mapper)
        }
    }
    let mut ema = Ema {
        path: ModulePath::default(),
        student: collect_params(student),
        m,
    };
    teacher.map(&mut ema)
}
