//! The browser's WebGPU device for Burn: acquired once per page or worker (Burn's runtime
//! cannot be initialised twice), and the answer - a device or why there is none - reused.

use std::cell::RefCell;

use burn::tensor::Device;

thread_local! {
    static DEVICE: RefCell<Option<Result<Device, String>>> = const { RefCell::new(None) };
}

/// The WebGPU device, or a readable reason why this browser has none.
pub async fn device() -> Result<Device, String> {
    if let Some(known) = DEVICE.with(|d| d.borrow().clone()) {
        return known;
    }
    let found = acquire().await;
    // a concurrent `load` may have won the race: keep the first answer
    DEVICE.with(|d| d.borrow_mut().get_or_insert(found).clone())
}

async fn acquire() -> Result<Device, String> {
    // asks for an adapter first: some browsers expose `navigator.gpu` without one
    if !burn::tensor::wgpu::wgpu::util::is_browser_webgpu_supported().await {
        return Err(
            "this browser gives no WebGPU adapter (navigator.gpu is missing or \
                    requestAdapter() returned none)"
                .into(),
        );
    }
    Device::wgpu_options()
        .init_async()
        .await
        .map_err(|e| format!("WebGPU could not be initialised: {e}"))
}
