//! Znode data as ZooKeeper hands it to discovery: Nerve JSON and ServerSet JSON (the first byte picks the
//! decoder, for ServerSet whether an `additionalEndpoints` name is asked for, and whether weights are read).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sinew::config::{Decode, DecodeMethod};
use sinew::discovery::zookeeper::decode::decode;

fuzz_target!(|input: &[u8]| {
    let Some((&how, data)) = input.split_first() else {
        return;
    };
    let decode_as = Decode {
        method: if how & 1 == 0 {
            DecodeMethod::Nerve
        } else {
            DecodeMethod::Serverset
        },
        endpoint_name: (how & 2 != 0).then(|| "http".to_string()),
    };
    let _ = decode("i-0abc_0000000001", data, &decode_as, how & 4 == 0);
});
