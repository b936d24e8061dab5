//! Every Kafka client of the consumer (the group consumer of `run`, the
//! dead-letter producer, `replay`'s reader) is configured here, from the same
//! bootstrap servers and the operator's librdkafka properties
//! (`--kafka-property`: TLS, SASL, tuning), so no client can be left unable to
//! reach a cluster the others reach.

use rdkafka::ClientConfig;

/// Where a client connects and how: the bootstrap servers and the operator's
/// librdkafka properties, applied to every client alike.
#[derive(Debug, Clone, Copy)]
pub struct KafkaConnection<'a> {
    pub brokers: &'a str,
    pub properties: &'a [(String, String)],
}

impl KafkaConnection<'_> {
    /// A client configuration in three layers, later ones winning:
    /// 1. `defaults`: the role's tuning, which the operator may override;
    /// 2. the operator's properties;
    /// 3. `fixed`: what the role's guarantees rest on (for example the
    ///    consumer's manual offset store); an operator's value for one of these
    ///    keys is ignored, with a warning.
    pub fn client_config(&self, defaults: &[(&str, &str)], fixed: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers);
        for (key, value) in defaults {
            config.set(*key, *value);
        }
        for (key, value) in self.properties {
            config.set(key, value);
        }
        for (key, value) in fixed {
            if let Some((_, given)) = self.properties.iter().find(|(k, _)| k == key)
                && given != value
            {
                tracing::warn!(
                    property = %key,
                    given = %given,
                    used = %value,
                    "Kafka property overridden: this client depends on its own value"
                );
            }
            config.set(*key, *value);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operator_properties_override_defaults_but_not_fixed_settings() {
        let properties = vec![
            ("security.protocol".to_string(), "SASL_SSL".to_string()),
            ("session.timeout.ms".to_string(), "45000".to_string()),
            ("enable.auto.offset.store".to_string(), "true".to_string()),
        ];
        let connection = KafkaConnection {
            brokers: "kafka:9093",
            properties: &properties,
        };
        let config = connection.client_config(
            &[
                ("session.timeout.ms", "10000"),
                ("fetch.wait.max.ms", "100"),
            ],
            &[("enable.auto.offset.store", "false")],
        );
        assert_eq!(config.get("bootstrap.servers"), Some("kafka:9093"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(config.get("session.timeout.ms"), Some("45000"));
        assert_eq!(config.get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(config.get("enable.auto.offset.store"), Some("false"));
    }
}
